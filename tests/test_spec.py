import pytest

from rnn_mnist import spec as specs
from tests.conftest import JOBS

SEED_SETTINGS = {  # (nonlinearity, layers, lr) of the tutorial's three models
    "model_a": ("relu", 1, 0.01),
    "model_b": ("relu", 2, 0.01),
    "model_c": ("tanh", 2, 0.1),
}


@pytest.mark.parametrize("name", sorted(SEED_SETTINGS))
def test_shipped_model_jobs_carry_the_seeds_settings(name):
    spec = specs.load(JOBS / f"{name}.yaml")
    assert (spec.model.nonlinearity, spec.model.layer_dim, spec.train.lr) == SEED_SETTINGS[name]
    assert (spec.model.cell, spec.model.hidden_dim) == ("rnn", 100)
    t = spec.train
    assert (t.batch_size, t.iters, t.optimizer, t.eval_every) == (100, 3000, "sgd", 500)
    assert spec.name == name


def test_every_shipped_job_is_valid():
    for path in JOBS.glob("*.yaml"):
        assert isinstance(specs.load_any(path), (specs.JobSpec, specs.Grid))


def test_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "quick.yaml"
    path.write_text("train: {iters: 5}\n")
    spec = specs.load(path)
    assert (spec.name, spec.train.iters, spec.train.lr) == ("quick", 5, 0.01)


def test_spec_is_frozen():
    spec = specs.JobSpec()
    with pytest.raises(Exception):
        spec.train.lr = 1.0


def test_integers_are_accepted_as_numbers(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_text("train: {lr: 1}\n")
    assert specs.load(path).train.lr == 1.0


BAD = [  # yaml text, expected message after "<file>: "
    ("foo: 1\n", "foo: unknown field"),
    ("train: {lrr: 0.1}\n", "train.lrr: unknown field"),
    ("train: {lr: fast}\n", "train.lr: expected a positive number, got 'fast'"),
    ("train: {lr: -0.1}\n", "train.lr: expected a positive number, got -0.1"),
    ("train: {iters: 0}\n", "train.iters: expected a positive integer, got 0"),
    ("train: {iters: 2.5}\n", "train.iters: expected a positive integer, got 2.5"),
    ("train: {iters: true}\n", "train.iters: expected a positive integer, got True"),
    ("train: {optimizer: rmsprop}\n", "train.optimizer: expected one of sgd, adam, got 'rmsprop'"),
    ("train: {grad_clip: -1}\n", "train.grad_clip: expected a positive number or null, got -1.0"),
    ("train: {momentum: 1.5}\n", "train.momentum: expected a number in [0, 1), got 1.5"),
    ("model: {cell: transformer}\n", "model.cell: expected one of rnn, lstm, gru, got 'transformer'"),
    ("model: {cell: lstm, nonlinearity: relu}\n", "model.nonlinearity: 'relu' applies to the rnn cell only"),
    ("model: {hidden_dim: '100'}\n", "model.hidden_dim: expected a positive integer, got '100'"),
    ("scaling: {gpu: yes please}\n", "scaling.gpu: expected true or false, got 'yes please'"),
    ("train: 5\n", "train: expected a mapping of fields, got 5"),
    ("name: a/b\n", "name: expected letters, digits"),
    ("- a\n- b\n", "expected a mapping of sections at the top, got list"),
    ("train: {lr: 0.1\n", "malformed YAML"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_spec_names_the_file_and_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(specs.SpecError) as err:
        specs.load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  lr: [0.1\n")
    with pytest.raises(specs.SpecError, match=r"bad.yaml: line \d+: malformed YAML"):
        specs.load(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(specs.SpecError, match="nope.yaml: no such file"):
        specs.load(tmp_path / "nope.yaml")


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_text("train: {lr: 0.1}\n")
    spec = specs.load(path, ["train.lr=0.05", "model.layer_dim=2", "train.grad_clip=null", "scaling.gpu=true"])
    assert (spec.train.lr, spec.model.layer_dim, spec.train.grad_clip, spec.scaling.gpu) == (0.05, 2, None, True)


@pytest.mark.parametrize("override,message", [
    ("train.lr=fast", "(with --set): train.lr: expected a positive number, got 'fast'"),
    ("train.foo=1", "(with --set): train.foo: unknown field"),
    ("train.lr", "--set train.lr: expected dotted.key=value"),
    ("name.x=1", "--set name.x=1: name is not a section"),
])
def test_bad_override_is_named(tmp_path, override, message):
    path = tmp_path / "j.yaml"
    path.write_text("name: j\n")
    with pytest.raises(specs.SpecError) as err:
        specs.load(path, [override])
    assert message in str(err.value)


def test_resolved_spec_round_trips_through_yaml(tmp_path):
    spec = specs.load(JOBS / "model_c.yaml", ["train.iters=7"])
    path = tmp_path / "config.yaml"
    path.write_text(specs.dump(spec))
    assert specs.load(path) == spec


def write(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_grid_is_the_cartesian_product_of_its_values(tmp_path):
    path = write(tmp_path, "train: {iters: 5}\ngrid:\n  train.lr: [0.01, 0.1]\n  model.layer_dim: [1, 2]\n")
    grid = specs.load_grid(path)
    assert grid.name == "g" and grid.output_dir == "runs"
    assert [t.name for t in grid.trials] == ["lr=0.01,layer_dim=1", "lr=0.01,layer_dim=2",
                                             "lr=0.1,layer_dim=1", "lr=0.1,layer_dim=2"]
    last = grid.trials[-1].spec
    assert (last.name, last.train.lr, last.model.layer_dim, last.train.iters) == ("lr=0.1,layer_dim=2", 0.1, 2, 5)


def test_trial_names_keep_the_full_key_when_two_keys_end_alike(tmp_path):
    path = write(tmp_path, "grid:\n  model.nonlinearity: [relu]\n  scaling.gpu: [false]\n  train.seed: [1, 2]\n")
    assert [t.name for t in specs.load_grid(path).trials] == ["nonlinearity=relu,gpu=false,seed=1",
                                                              "nonlinearity=relu,gpu=false,seed=2"]


def test_presets_sweep_whole_job_files_with_the_grid_files_fields_on_top(tmp_path):
    write(tmp_path, "model: {nonlinearity: relu, layer_dim: 2}\ntrain: {lr: 0.5, iters: 10}\n", "base.yaml")
    path = write(tmp_path, "train: {iters: 7}\ngrid:\n  preset: [base]\n  train.seed: [3]\n")
    (trial,) = specs.load_grid(path).trials
    assert trial.name == "base,seed=3"
    s = trial.spec
    assert (s.model.nonlinearity, s.model.layer_dim, s.train.lr, s.train.iters, s.train.seed) == ("relu", 2, 0.5, 7, 3)


def test_the_shipped_comparison_runs_the_three_seed_models():
    grid = specs.load_grid(JOBS / "compare_abc.yaml")
    assert [t.name for t in grid.trials] == ["model_a", "model_b", "model_c"]
    for trial in grid.trials:
        shipped = specs.load(JOBS / f"{trial.name}.yaml")
        assert trial.spec.model == shipped.model and trial.spec.train == shipped.train


def test_the_shipped_model_c_grid_sweeps_lr_and_hidden_size_with_asha():
    grid = specs.load_grid(JOBS / "grid_c.yaml")
    assert len(grid.trials) == 9 and grid.tune.scheduler == "asha" and grid.tune.metric == "accuracy"
    assert {t.spec.train.lr for t in grid.trials} == {0.05, 0.1, 0.2}
    assert {t.spec.model.hidden_dim for t in grid.trials} == {64, 100, 128}


BAD_GRIDS = [
    ("grid:\n  train.lr: [0.1, fast]\n", "grid train.lr='fast': train.lr: expected a positive number, got 'fast'"),
    ("grid:\n  train.lrr: [0.1]\n", "grid train.lrr=0.1: train.lrr: unknown field"),
    ("grid:\n  train.lr: 0.1\n", "grid.train.lr: expected a non-empty list of values, got 0.1"),
    ("grid:\n  train.lr: []\n", "grid.train.lr: expected a non-empty list of values"),
    ("grid: [1, 2]\n", "grid: expected a mapping of dotted keys to lists of values"),
    ("grid:\n  output.dir: [a, b]\n", "grid.output.dir: cannot be swept"),
    ("grid:\n  preset: [nowhere]\n", "grid preset='nowhere': no job file"),
    ("grid:\n  train.lr: [0.1]\ntune: {scheduler: hyperband}\n", "tune.scheduler: expected one of none, asha"),
    ("model: {nonlinearity: relu}\ngrid:\n  model.cell: [rnn, lstm]\n",
     "model.nonlinearity: 'relu' applies to the rnn"),
]


@pytest.mark.parametrize("text,message", BAD_GRIDS, ids=[m.split(":")[0] for _, m in BAD_GRIDS])
def test_bad_grid_values_name_the_key_and_the_value(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(specs.SpecError) as err:
        specs.load_grid(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
