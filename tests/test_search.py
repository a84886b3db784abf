"""Sampled searches on Ray Tune (random and Optuna), with seeds that count: small real searches on
MNIST and a real local Ray with 2 CPUs shared by the module."""

import json
import math
import statistics

import pytest
import yaml

from rnn_mnist import report, rundir
from tests.conftest import invoke, job_text

pytestmark = pytest.mark.slow


def search_file(tmp_path, mnist_root, name, body, iters=30):
    path = tmp_path / f"{name}.yaml"
    path.write_text(job_text(mnist_root, tmp_path / "runs", name, iters=iters, eval_every=10) + body)
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
        assert summary["status"] == "completed" and summary["iterations"] == 30 and summary["name"] == run.name
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
            "data: {root: " + str(mnist_root) + ", validation: 2000}\n"
            "tune: {metric: val_accuracy, mode: max}\n")
    result = invoke("submit", search_file(tmp_path, mnist_root, "seeds", body, iters=20))
    assert result.exit_code == 0, result.output
    assert "A new study created" not in result.output and "Configuration for experiment" not in result.output
    search_dir = tmp_path / "runs" / "seeds"
    for sample in samples(search_dir):
        seeds = sorted(p.name for p in sample.iterdir() if (p / "config.yaml").exists())
        assert seeds == ["seed=0", "seed=1"]
        a, b = (rundir.read_config(sample / s) for s in seeds)
        assert (a.train.seed, b.train.seed) == (0, 1) and a.train.lr == b.train.lr  # one configuration, two seeds
        assert rundir.read_summary(sample / "seed=0")["final_val_accuracy"] is not None
    # Optuna learnt from what Tune was told: each sample's mean validation accuracy over its seeds
    told = [json.loads(line) for path in (search_dir / "tune").rglob("result.json") for line in line_list(path)]
    assert len(told) == 2 and all(r["seeds"] == 2 for r in told)
    for r in told:
        sample = next(s for s in samples(search_dir)
                      if rundir.read_config(s / "seed=0").train.lr == r["config"]["values"]["train.lr"])
        vals = [rundir.read_summary(sample / f"seed={k}")["final_val_accuracy"] for k in (0, 1)]
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
