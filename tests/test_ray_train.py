"""Ray Train jobs (`rnnjob submit`) on a real local Ray with 2 CPUs, shared by the module, and once as a
user runs it: the executable starting its own embedded Ray."""

import pytest

from rnn_mnist import rundir
from tests.conftest import JOBS, assert_one_line_error, invoke, job_text, rnnjob

pytestmark = pytest.mark.slow


@pytest.fixture
def short_job(tmp_path, mnist_root):
    path = tmp_path / "short.yaml"
    path.write_text(job_text(mnist_root, tmp_path / "runs", "short", iters=200, eval_every=50, hidden=32))
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_submit_trains_on_n_workers(local_ray, short_job, workers):
    result = invoke("submit", short_job, "--workers", workers)
    assert result.exit_code == 0, result.output
    run = short_job.parent / "runs" / "short"
    summary = rundir.read_summary(run)
    assert summary["workers"] == workers and summary["device"] == "cpu" and summary["iterations"] == 200
    assert summary["threads"] == 2 // workers  # a job alone shares the 2 CPUs among its workers
    assert summary["gradient_sync"] == (None if workers == 1 else "gloo")  # DDP's CPU backend
    metrics = rundir.read_metrics(run)
    assert [m["iteration"] for m in metrics] == [50, 100, 150, 200]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert summary["final_accuracy"] == metrics[-1]["accuracy"] > 30.0
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "config.yaml", "metrics.jsonl", "model.pt", "ray", "summary.json"]
    assert result.stdout.count("Iteration: 200. Loss: ") == 1  # rank 0's lines, once
    assert "Reporting training result" not in result.output  # Ray Train's own line for each report


def test_one_worker_on_ray_gives_the_same_metrics_as_a_local_run(local_ray, short_job):
    assert invoke("submit", short_job, "--workers", 1).exit_code == 0
    assert invoke("run", short_job, "--device", "cpu", "--set", "train.iters=200").exit_code == 0
    runs = short_job.parent / "runs"
    strip = lambda ms: [(m["iteration"], m["loss"], m["accuracy"]) for m in ms]  # noqa: E731
    ray_summary = rundir.read_summary(runs / "short")
    assert ray_summary["threads"] == 2  # as the local run: the same thread count, so the same rounding
    assert strip(rundir.read_metrics(runs / "short")) == strip(rundir.read_metrics(runs / "short-2"))


def test_a_model_trained_on_two_workers_loads_like_a_local_one(local_ray, short_job):
    assert invoke("submit", short_job, "--workers", 2, "--iters", 50).exit_code == 0
    run = short_job.parent / "runs" / "short"
    state = rundir.load_model(run / rundir.MODEL)
    assert not any(k.startswith("module.") for k in state["model"])  # no DDP prefix
    result = invoke("eval", run, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"test accuracy {rundir.read_summary(run)['final_accuracy']:.2f}%" in result.stdout


def test_a_killed_worker_is_replaced_and_the_job_finishes_exactly(local_ray, short_job):
    # rank 1 exits once, between the checkpoints at 100 and 150
    result = invoke("submit", short_job, "--workers", 2, RNNJOB_FAULT="1:120")
    assert result.exit_code == 0, result.output
    run = short_job.parent / "runs" / "short"
    assert (run / ".fault-injected").exists()
    summary = rundir.read_summary(run)
    assert summary["restarts"] == 1 and summary["iterations"] == 200
    assert [m["iteration"] for m in rundir.read_metrics(run)] == [50, 100, 150, 200]
    assert rundir.load_model(run / rundir.MODEL)["iteration"] == 200


@pytest.mark.parametrize("args,code,fragment", [
    (["--workers", 4], 2, "asked for 4 worker(s) of 1 CPU(s) each, the cluster has 2 CPU(s)"),
    (["--gpu"], 2, "asked for 1 GPU worker(s), the cluster has 0 GPU(s)"),
    (["--workers", 3], 2, "train.batch_size: 100 does not split evenly over 3 workers"),
])
def test_a_job_the_cluster_cannot_place_is_refused_and_leaves_nothing(local_ray, short_job, args, code, fragment):
    assert_one_line_error(invoke("submit", short_job, *args), code, fragment)
    assert not (short_job.parent / "runs").exists()


def test_a_malformed_fault_setting_is_refused(local_ray, short_job):
    assert_one_line_error(invoke("submit", short_job, RNNJOB_FAULT="rank one"), 2,
                          "RNNJOB_FAULT=rank one: expected RANK:ITERATION")
    assert not (short_job.parent / "runs").exists()


def test_the_executable_starts_an_embedded_ray_and_streams_rank_0(tmp_path, mnist_root):
    done = rnnjob("submit", JOBS / "smoke.yaml", "--out", tmp_path, "--set", f"data.root={mnist_root}", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ray dashboard: http://127.0.0.1:" in done.stdout
    assert done.stdout.count("Iteration: 30. Loss: ") == 1 and done.stdout.count("Iteration: 60. Loss: ") == 1
    summary = rundir.read_summary(tmp_path / "smoke")
    assert summary["workers"] == 1 and summary["threads"] == 2 and summary["iterations"] == 60
    assert done.stdout.strip().splitlines()[-1].startswith("done: ")
    assert "PreemptionWatcher" not in done.stdout + done.stderr  # no such actor on one machine
