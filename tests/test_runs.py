"""A run's life in this process (runs.local): checks first, then the directory, training, and a summary
on every outcome. (Ray jobs and grids go through the same owner: test_ray_train, test_grid.)"""

from pathlib import Path

import pytest

from rnn_mnist import rundir, runs, spec as specs
from rnn_mnist.errors import BadInput, Interrupted, RunFailed


def quiet(line):
    pass


def test_a_completed_run_leaves_its_whole_directory(job_file):
    run, summary = runs.local(specs.load(job_file()), "cpu", quiet)
    assert sorted(p.name for p in Path(run).iterdir()) == [
        "config.yaml", "metrics.jsonl", "model.pt", "summary.json"]
    assert summary == rundir.read_summary(run) and summary["status"] == "completed" and summary["iterations"] == 20
    assert rundir.read_config(run) == specs.resolved(specs.load(job_file()))  # absolute paths: resumable anywhere


def test_ctrl_c_leaves_an_interrupted_summary_and_the_last_model(job_file):
    def ctrl_c_at_20(iteration, loss):  # the progress callback runs every 10 steps, before that step's evaluation
        if iteration == 20:
            raise KeyboardInterrupt

    spec = specs.load(job_file(), ["train.eval_every=5"])
    with pytest.raises(Interrupted, match="interrupted; the last evaluated model is in "):
        runs.local(spec, "cpu", quiet, progress=ctrl_c_at_20)
    run = job_file().parent / "runs" / "tiny"
    summary = rundir.read_summary(run)
    assert summary["status"] == "interrupted" and summary["iterations"] == 15  # the last checkpoint
    assert rundir.load_model(run)["iteration"] == 15


def test_a_failed_run_says_why_in_its_summary(job_file):
    spec = specs.load(job_file(), ["model.nonlinearity=relu", "train.lr=1.0e+6"])
    with pytest.raises(RunFailed, match="training diverged"):
        runs.local(spec, "cpu", quiet)
    summary = rundir.read_summary(job_file().parent / "runs" / "tiny")
    assert summary["status"] == "failed" and "diverged" in summary["error"] and summary["iterations"] == 0


def test_bad_input_found_before_training_leaves_no_directory(job_file, tmp_path):
    with pytest.raises(BadInput, match="no CUDA device"):
        runs.local(specs.load(job_file()), "cuda", quiet)
    assert not (tmp_path / "runs").exists()


def test_relative_paths_are_taken_from_rnnjob_home(job_file, tmp_path, monkeypatch, mnist_root):
    monkeypatch.setenv(specs.HOME_ENV, str(tmp_path / "home"))
    run, _ = runs.local(specs.load(job_file(), ["output.dir=relative"]), "cpu", quiet)
    assert run == str(tmp_path / "home" / "relative" / "tiny")
