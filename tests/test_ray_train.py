"""Ray Train jobs on a real local Ray with 2 CPUs, shared by the whole module (Ray's start-up costs seconds)."""

import pytest
from typer.testing import CliRunner

from rnn_mnist import rundir
from rnn_mnist.cli import app
from tests.conftest import own_lines

pytestmark = pytest.mark.slow


@pytest.fixture
def short_job(tmp_path, mnist_root):
    path = tmp_path / "short.yaml"
    path.write_text(
        "name: short\n"
        "model: {hidden_dim: 32, layer_dim: 1, nonlinearity: tanh}\n"
        "train: {iters: 200, eval_every: 50, lr: 0.1, batch_size: 100}\n"
        f"data: {{root: {mnist_root}}}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n")
    return path


def submit(*args):
    return CliRunner().invoke(app, ["submit", *map(str, args)])


@pytest.mark.parametrize("workers", [1, 2])
def test_submit_trains_on_n_workers(local_ray, short_job, workers):
    result = submit(short_job, "--workers", workers)
    assert result.exit_code == 0, result.output
    run = short_job.parent / "runs" / "short"
    summary = rundir.read_summary(run)
    assert summary["workers"] == workers and summary["device"] == "cpu" and summary["iterations"] == 200
    assert summary["threads"] == 2 // workers  # a job alone shares the 2 CPUs among its workers
    assert summary["gradient_sync"] == (None if workers == 1 else "local")  # both workers on this machine
    metrics = rundir.read_metrics(run)
    assert [m["iteration"] for m in metrics] == [50, 100, 150, 200]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert summary["final_accuracy"] == metrics[-1]["accuracy"] > 30.0
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "config.yaml", "metrics.jsonl", "model.pt", "ray", "summary.json"]


def test_a_model_trained_on_two_workers_loads_like_a_local_one(local_ray, short_job):
    assert submit(short_job, "--workers", 2, "--iters", 50, "--set", "scaling.local_sync=false").exit_code == 0
    run = short_job.parent / "runs" / "short"
    assert rundir.read_summary(run)["gradient_sync"] == "gloo"  # as asked, although both share this machine
    state = rundir.load_model(run / rundir.MODEL)
    assert not any(k.startswith("module.") for k in state["model"])  # no DDP prefix
    result = CliRunner().invoke(app, ["eval", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"test accuracy {rundir.read_summary(run)['final_accuracy']:.2f}%" in result.stdout


def test_a_killed_worker_is_replaced_and_the_job_finishes_exactly(local_ray, short_job, monkeypatch):
    monkeypatch.setenv("RNNJOB_FAULT", "1:120")  # rank 1 exits once, between the checkpoints at 100 and 150
    result = submit(short_job, "--workers", 2)
    assert result.exit_code == 0, result.output
    run = short_job.parent / "runs" / "short"
    assert (run / ".fault-injected").exists()
    summary = rundir.read_summary(run)
    assert summary["restarts"] == 1 and summary["iterations"] == 200
    assert [m["iteration"] for m in rundir.read_metrics(run)] == [50, 100, 150, 200]
    assert rundir.load_model(run / rundir.MODEL)["iteration"] == 200


def one_line_error(result, code, fragment):
    assert result.exit_code == code, result.output
    lines = own_lines(result.stderr)
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_more_workers_than_cpus_is_refused(local_ray, short_job):
    result = submit(short_job, "--workers", 4, "--set", "train.batch_size=100")
    one_line_error(result, 2, "asked for 4 worker(s) of 1 CPU(s) each, the cluster has 2 CPU(s)")
    assert not (short_job.parent / "runs").exists()


def test_gpu_on_a_cluster_without_one_is_refused(local_ray, short_job):
    one_line_error(submit(short_job, "--gpu"), 2, "asked for 1 GPU worker(s), the cluster has 0 GPU(s)")


def test_a_batch_that_does_not_split_is_refused(local_ray, short_job):
    one_line_error(submit(short_job, "--workers", 3), 2, "train.batch_size: 100 does not split evenly over 3 workers")


def test_a_malformed_fault_setting_is_refused(local_ray, short_job, monkeypatch):
    monkeypatch.setenv("RNNJOB_FAULT", "rank one")
    one_line_error(submit(short_job), 2, "RNNJOB_FAULT=rank one: expected RANK:ITERATION")
    assert not (short_job.parent / "runs").exists()
