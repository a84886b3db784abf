import dataclasses
from pathlib import Path

import pytest
import yaml

from rnn_mnist import spec as specs
from rnn_mnist import sweep
from tests.helpers import JOBS


def test_every_shipped_job_is_valid():
    for path in JOBS.glob("*.yaml"):
        assert isinstance(sweep.load_any(path), (specs.JobSpec, sweep.Grid, sweep.Search))


def leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_jobs_set_only_what_differs_from_the_defaults(path):
    raw = yaml.safe_load(path.read_text())
    defaults = dict(leaves(specs.JobSpec().to_dict()))
    same = [key for key, value in leaves({k: v for k, v in raw.items() if k not in ("grid", "tune")})
            if key in defaults and defaults[key] == value]
    assert same == [], f"{path.name} restates defaults: {same}"


def test_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "quick.yaml"
    path.write_text("train: {iters: 5}\n")
    spec = specs.load(path)
    assert (spec.name, spec.train.iters, spec.train.lr) == ("quick", 5, 0.01)


def test_spec_is_frozen():
    spec = specs.JobSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
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
    ("train: {iters: 0}\n", "train.iters: expected an integer from 1 to 100000000, got 0"),
    ("train: {iters: 2.5}\n", "train.iters: expected an integer from 1 to 100000000, got 2.5"),
    ("train: {iters: true}\n", "train.iters: expected an integer from 1 to 100000000, got True"),
    ("train: {optimizer: rmsprop}\n", "train.optimizer: expected one of sgd, adam, got 'rmsprop'"),
    ("train: {grad_clip: -1}\n", "train.grad_clip: expected a positive number or null, got -1.0"),
    ("train: {momentum: 1.5}\n", "train.momentum: expected a number in [0, 1), got 1.5"),
    ("model: {cell: transformer}\n", "model.cell: expected one of rnn, lstm, gru, got 'transformer'"),
    ("model: {kernel: cuda}\n", "model.kernel: expected one of auto, torch, got 'cuda'"),
    ("model: {cell: lstm, nonlinearity: relu}\n", "model.nonlinearity: 'relu' applies to the rnn cell only"),
    ("model: {hidden_dim: '100'}\n", "model.hidden_dim: expected an integer from 1 to 4096, got '100'"),
    ("scaling: {gpu: yes please}\n", "scaling.gpu: expected true or false, got 'yes please'"),
    ("train: 5\n", "train: expected a mapping of fields, got 5"),
    ("name: a/b\n", "name: expected up to 100 letters, digits"),
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
    grid = sweep.load_grid(path)
    assert grid.name == "g" and grid.output_dir == "runs"
    assert [t.name for t in grid.trials] == ["lr=0.01,layer_dim=1", "lr=0.01,layer_dim=2",
                                             "lr=0.1,layer_dim=1", "lr=0.1,layer_dim=2"]
    last = grid.trials[-1].spec
    assert (last.name, last.train.lr, last.model.layer_dim, last.train.iters) == ("lr=0.1,layer_dim=2", 0.1, 2, 5)


def test_trial_names_keep_the_full_key_when_two_keys_end_alike(tmp_path):
    path = write(tmp_path, "grid:\n  model.nonlinearity: [relu]\n  scaling.gpu: [false]\n  train.seed: [1, 2]\n")
    assert [t.name for t in sweep.load_grid(path).trials] == ["nonlinearity=relu,gpu=false,seed=1",
                                                              "nonlinearity=relu,gpu=false,seed=2"]


def test_presets_sweep_whole_job_files_with_the_grid_files_fields_on_top(tmp_path):
    write(tmp_path, "model: {nonlinearity: relu, layer_dim: 2}\ntrain: {lr: 0.5, iters: 10}\n", "base.yaml")
    path = write(tmp_path, "train: {iters: 7}\ngrid:\n  preset: [base]\n  train.seed: [3]\n")
    (trial,) = sweep.load_grid(path).trials
    assert trial.name == "base,seed=3"
    s = trial.spec
    assert (s.model.nonlinearity, s.model.layer_dim, s.train.lr, s.train.iters, s.train.seed) == ("relu", 2, 0.5, 7, 3)


def test_a_preset_trial_is_its_job_file_unchanged():
    grid = sweep.load_grid(JOBS / "compare_abc.yaml")
    for trial in grid.trials:
        shipped = specs.load(JOBS / f"{trial.name}.yaml")
        assert trial.spec == dataclasses.replace(shipped, name=trial.name)


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
        sweep.load_grid(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_field_this_rnnjob_does_not_know_is_refused_even_one_an_older_draft_wrote(tmp_path):
    # 0.1.0 was never released with scaling.local_sync: no shim reads it
    path = write(tmp_path, "scaling: {workers: 2, local_sync: false}\n", "old.yaml")
    with pytest.raises(specs.SpecError, match="scaling.local_sync: unknown field"):
        specs.load(path)


def test_relative_paths_are_resolved_from_rnnjob_home(tmp_path, monkeypatch):
    path = write(tmp_path, "data: {root: mnist}\noutput: {dir: runs}\n", "j.yaml")
    monkeypatch.setenv(specs.HOME_ENV, str(tmp_path / "home"))
    spec = specs.resolved(specs.load(path))
    assert (spec.data.root, spec.output.dir) == (str(tmp_path / "home" / "mnist"), str(tmp_path / "home" / "runs"))


def test_without_rnnjob_home_relative_paths_start_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(specs.HOME_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    spec = specs.resolved(specs.load(write(tmp_path, "output: {dir: runs, storage: s3://bucket/x}\n", "j.yaml")))
    assert spec.output.dir == str(tmp_path.resolve() / "runs") and spec.output.storage == "s3://bucket/x"
    assert Path(spec.data.root).is_absolute()


def test_a_grids_trials_and_directory_are_resolved_alike(tmp_path, monkeypatch):
    monkeypatch.setenv(specs.HOME_ENV, str(tmp_path))
    grid = sweep.resolved(sweep.load_grid(write(tmp_path, "grid:\n  train.seed: [1, 2]\n")))
    assert grid.output_dir == str(tmp_path / "runs")
    assert {t.spec.output.dir for t in grid.trials} == {str(tmp_path / "runs")}
