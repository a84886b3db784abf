"""Sampled searches on Ray Tune (random and Optuna), with seeds that count: small real searches on
MNIST, in this process joined to the session's running Ray head (2 CPUs), or as a user runs them on it."""

import json
import math
import statistics

import pytest
import yaml

from rnn_mnist import report, rundir
from tests.helpers import invoke, job_text

pytestmark = pytest.mark.slow


def search_file(tmp_path, mnist_root, name, body, iters=30, **fields):
    path = tmp_path / f"{name}.yaml"
    path.write_text(job_text(mnist_root, tmp_path / "runs", name, iters=iters, eval_every=10, **fields) + body)
    return path


def samples(search_dir):
    return sorted(p for p in search_dir.iterdir() if p.name.startswith("sample"))


def test_a_random_search_samples_every_value_within_its_distribution(local_ray, tmp_path, mnist_root):
    body = ("search:\n  num_samples: 3\n  space:\n"
            "    train.lr: {loguniform: [0.01, 0.3]}\n"
            "    model.hidden_dim: {choice: [8, 16]}\n"
            "    train.momentum: {uniform: [0.0, 0.5]}\n"
            "    model.layer_dim: {randint: [1, 3]}\n")
    result = invoke("submit", search_file(tmp_path, mnist_root, "drawn", body))
    assert result.exit_code == 0, result.output
    search_dir = tmp_path / "runs" / "drawn"
    assert "3 samples, random" in result.stdout and "done: 3 runs" in result.stdout
    runs = samples(search_dir)
    assert len(runs) == 3
    drawn = []
    for run in runs:
        spec, summary = rundir.read_config(run), rundir.read_summary(run)
        values = json.loads((run / "values.json").read_text())
        assert summary.status == "completed" and summary.iterations == 30 and summary.name == run.name
        assert 0.01 <= spec.train.lr <= 0.3 and spec.model.hidden_dim in (8, 16)
        assert 0.0 <= spec.train.momentum <= 0.5 and spec.model.layer_dim in (1, 2)  # randint's high is excluded
        assert values == {"train.lr": spec.train.lr, "model.hidden_dim": spec.model.hidden_dim,
                          "train.momentum": spec.train.momentum, "model.layer_dim": spec.model.layer_dim}
        assert spec.train.seed == 0 and (run / "hparams").is_dir()  # TensorBoard's hparams view of the sample
        drawn.append(spec.train.lr)
    assert len(set(drawn)) == 3  # drawn, not repeated
    recorded = yaml.safe_load((search_dir / "search.yaml").read_text())
    assert recorded["space"]["train.lr"] == {"loguniform": [0.01, 0.3]} and recorded["search"]["num_samples"] == 3


def test_an_optuna_search_repeats_each_configuration_at_several_seeds_and_reports_their_mean(
        local_ray, tmp_path, mnist_root):
    body = ("search:\n  algorithm: optuna\n  num_samples: 2\n  space:\n"
            "    train.lr: {loguniform: [0.02, 0.2]}\n"
            "repeat: 2\n"
            "tune: {metric: val_accuracy, mode: max}\n")
    result = invoke("submit", search_file(tmp_path, mnist_root, "seeds", body, iters=20, validation=2000))
    assert result.exit_code == 0, result.output
    assert "A new study created" not in result.output and "Configuration for experiment" not in result.output
    search_dir = tmp_path / "runs" / "seeds"
    for sample in samples(search_dir):
        seeds = sorted(p.name for p in sample.iterdir() if (p / "config.yaml").exists())
        assert seeds == ["seed=0", "seed=1"]
        a, b = (rundir.read_config(sample / s) for s in seeds)
        assert (a.train.seed, b.train.seed) == (0, 1) and a.train.lr == b.train.lr  # one configuration, two seeds
        assert rundir.read_summary(sample / "seed=0").final_val_accuracy is not None
    # Optuna learnt from what Tune was told: each sample's mean validation accuracy over its seeds
    told = [json.loads(line) for path in (search_dir / "tune").rglob("result.json") for line in line_list(path)]
    assert len(told) == 2 and all(r["seeds"] == 2 for r in told)
    for r in told:
        sample = next(s for s in samples(search_dir)
                      if rundir.read_config(s / "seed=0").train.lr == r["config"]["values"]["train.lr"])
        vals = [rundir.read_summary(sample / f"seed={k}").final_val_accuracy for k in (0, 1)]
        assert math.isclose(r["val_accuracy"], statistics.fmean(vals))
        assert math.isclose(r["val_accuracy_std"], statistics.pstdev(vals))
    # `rnnjob results`: the per-run rows, then one row per configuration, mean and spread over its seeds
    shown = invoke("results", search_dir)
    assert shown.exit_code == 0 and "final_accuracy_mean" in shown.stdout
    table, rows, _ = report.tables(search_dir)
    assert sorted(r["configuration"] for r in rows) == [s.name for s in samples(search_dir)]
    for row in rows:
        accs = [r["final_accuracy"] for r in table if r["name"].startswith(row["configuration"] + "/")]
        assert row["seeds"] == row["completed"] == 2
        assert math.isclose(row["final_accuracy_mean"], statistics.fmean(accs))
        assert math.isclose(row["final_accuracy_std"], statistics.pstdev(accs))


def line_list(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_resume_of_an_interrupted_search_carries_on_its_samples_and_draws_the_rest(tmp_path, mnist_root, head):
    import shutil

    from tests.helpers import assert_one_line_error, ctrl_c_once, rnnjob

    body = "search:\n  num_samples: 3\n  space:\n    train.lr: {loguniform: [0.05, 0.2]}\n"
    path = search_file(tmp_path, mnist_root, "later", body, iters=1500)
    search_dir = tmp_path / "runs" / "later"

    def second_sample_checkpointed():  # one sample at a time: the first has ended, the second has begun
        found = samples(search_dir) if search_dir.is_dir() else []
        return sum((run / "model.pt").exists() for run in found) == 2 and len(found) == 2

    # on the session's running head, as a search is stopped and carried on there (test_grid stops one on an
    # embedded Ray)
    done = ctrl_c_once(["submit", path, "--max-concurrent", 1, "--set", "train.eval_every=500", "--address",
                        head["gcs"]], second_sample_checkpointed)
    assert done.returncode == 130, done.stdout
    before = {run.name: rundir.read_summary(run) for run in samples(search_dir)}
    assert sorted(s.status for s in before.values()) == ["completed", "interrupted"]
    (finished,) = [name for name, s in before.items() if s.status == "completed"]
    (stopped,) = [name for name, s in before.items() if s.status == "interrupted"]
    # what a search cannot change on the way is refused, and nothing is touched
    tree = {p: p.read_bytes() for p in search_dir.rglob("*") if p.is_file()}
    assert_one_line_error(invoke("resume", search_dir, "--iters", 900), 2, "--iters: a search carries on as it was")
    copy = tmp_path / "copy"
    shutil.copytree(search_dir, copy)
    shutil.rmtree(copy / "tune")
    assert_one_line_error(invoke("resume", copy), 2, "Tune's record of this search (tune/) is missing")
    assert {p: p.read_bytes() for p in search_dir.rglob("*") if p.is_file()} == tree

    resumed = rnnjob("resume", search_dir, "--address", head["gcs"], timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "(resuming: 1 unfinished run(s), 1 sample(s) still to draw)" in resumed.stdout
    assert "done: 3 runs" in resumed.stdout
    after = {run.name: rundir.read_summary(run) for run in samples(search_dir)}
    assert len(after) == 3 and all(s.status == "completed" and s.iterations == 1500 for s in after.values())
    assert after[finished] == before[finished]  # left as it was
    # the interrupted sample carried on from its checkpoint (a resume); the third was drawn and ran anew
    assert {name: len(s.resumes) for name, s in after.items()} == {
        finished: 0, stopped: 1, **{name: 0 for name in after if name not in before}}
    assert all(0.05 <= rundir.read_config(search_dir / name).train.lr <= 0.2 for name in after)
    again = invoke("resume", search_dir)
    assert again.exit_code == 0 and "nothing to do" in again.stdout
