"""Ray Train jobs (`rnnjob submit`) in this process joined to the session's running Ray head (2 CPUs), and as a
user runs them: the executable starting its own embedded Ray."""

import json

import pytest

from rnn_mnist import rundir, storage
from tests.helpers import (
    assert_one_line_error,
    evaluations,
    in_bucket,
    invoke,
    job_text,
    rnnjob,
    weights_equal,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def short_job(tmp_path, mnist_root):
    path = tmp_path / "short.yaml"
    path.write_text(job_text(mnist_root, tmp_path / "runs", "short", iters=200, eval_every=50, hidden=32))
    return path


def trained(result, run, workers):
    """What every submitted job on N workers leaves: its summary, metrics and files, rank 0's lines once."""
    assert result.exit_code == 0, result.output
    summary = rundir.read_summary(run)
    assert summary.status == "completed" and summary.iterations == 200
    assert summary.workers == workers and summary.device == "cpu"
    assert summary.threads == 2 // workers  # a job alone shares the 2 CPUs among its workers
    assert summary.gradient_sync == (None if workers == 1 else "gloo")  # DDP's CPU backend
    metrics = rundir.read_metrics(run)
    assert [m["iteration"] for m in metrics] == [50, 100, 150, 200]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert summary.final_accuracy == metrics[-1]["accuracy"] > 30.0
    listed = {f.split("/")[0] for f in in_bucket(run)} if storage.is_uri(run) else {p.name for p in run.iterdir()}
    names = {name for name in listed if not name.startswith((".", "events.out.tfevents."))}
    assert names == {"config.yaml", "metrics.jsonl", "model.pt", "progress.json", "ray", "summary.json"}
    assert result.stdout.count("Iteration: 200. Loss: ") == 1  # rank 0's lines, once
    assert "Reporting training result" not in result.output  # Ray Train's own line for each report
    return summary


def test_one_worker_on_ray_trains_as_a_local_run_to_the_last_digit(local_ray, short_job):
    summary = trained(invoke("submit", short_job, "--workers", 1), short_job.parent / "runs" / "short", 1)
    assert summary.threads == 2  # as the local run below: the same thread count, so the same rounding
    import torch

    before = torch.get_num_threads()  # the test session's: 1 (conftest)
    torch.set_num_threads(2)
    try:
        assert invoke("run", short_job, "--device", "cpu", "--set", "train.iters=200").exit_code == 0
    finally:
        torch.set_num_threads(before)
    assert evaluations(short_job.parent / "runs" / "short") == evaluations(short_job.parent / "runs" / "short-2")


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


def test_the_executable_starts_an_embedded_ray_shows_a_progress_bar_on_a_terminal_and_streams_rank_0(
        tmp_path, mnist_root, head):
    import os
    import pty
    import subprocess

    from tests.helpers import RNNJOB, clean_env

    job = tmp_path / "bar.yaml"
    job.write_text(job_text(mnist_root, tmp_path / "runs", "bar", iters=600, eval_every=300))
    marks = tmp_path / "timeline.jsonl"
    leader, follower = pty.openpty()
    proc = subprocess.Popen([RNNJOB, "submit", str(job)], stdout=follower, stderr=follower, close_fds=True,
                            env=clean_env(RNNJOB_TIMELINE=str(marks)))
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=600) == 0, seen.decode(errors="replace")[-2000:]
    text = seen.decode(errors="replace")
    assert "train" in text and "━" in text and "loss 2." in text  # rich's bar, fed by the workers' progress.json
    assert "Ray dashboard: http://127.0.0.1:" in text and "PreemptionWatcher" not in text  # none on one machine
    # beside a `ray start` cluster (the session's head): Ray's State API, which Ray Train's PlacementGroupCleaner
    # asks about the job's controller, is pointed at this Ray's own dashboard, not at that cluster
    assert "multiple active Ray instances" not in text and "PlacementGroupCleaner" not in text
    assert text.count("Iteration: 300. Loss: ") == 1 and text.count("Iteration: 600. Loss: ") == 1  # rank 0's
    summary = rundir.read_summary(tmp_path / "runs" / "bar")
    assert summary.status == "completed" and summary.workers == 1 and summary.threads == 2
    # the timeline (benchmarks/overhead.py): the driver's marks and the worker's, which learnt the file from
    # its train_loop_config, in the order a job's life goes
    marked = [json.loads(line) for line in marks.read_text().splitlines()]
    driver = {m["pid"] for m in marked if m["what"] == "driver process started"}
    worker = {m["pid"] for m in marked if m["what"] == "worker function entered"}
    assert len(driver) == len(worker) == 1 and driver != worker
    order = ["driver process started", "ray started", "fit called", "worker process started",
             "worker function entered", "model ready", "data loaded", "first step done", "loop ended", "fit returned",
             "summary written", "ray left"]
    firsts = [next(m["t"] for m in marked if m["what"] == what) for what in order]
    assert firsts == sorted(firsts)


def test_two_embedded_rays_started_at_once_get_a_dashboard_each(tmp_path):
    # an embedded Ray's dashboard port is chosen before Ray starts and bound seconds later: two commands that
    # start together must not both take the one that was free then (Ray's 8265, here another port that is free)
    import subprocess
    import sys
    import time

    from tests.helpers import clean_env, free_port

    code = ("import sys, time\n"
            "from rnn_mnist import rayenv\n"
            "rayenv.configure()\n"
            "import ray\n"
            "from rnn_mnist import ray_train\n"
            "ray_train.DASHBOARD_PORT = int(sys.argv[1])\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # both at once, their imports done\n"
            "print(ray_train.embedded(num_cpus=1).dashboard_url, flush=True)\n"
            "ray.shutdown()\n")
    port, at = free_port(), time.time() + 8
    started = [subprocess.Popen([sys.executable, "-c", code, str(port), str(at)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=clean_env()) for _ in range(2)]
    outputs = [proc.communicate(timeout=180)[0] for proc in started]
    assert [proc.returncode for proc in started] == [0, 0], outputs
    urls = [output.strip().splitlines()[-1] for output in outputs]
    assert f"127.0.0.1:{port}" in urls and len(set(urls)) == 2, urls


@pytest.mark.parametrize("workers,where", [(1, "head"), (2, "embedded")])
def test_ctrl_c_on_submit_leaves_an_interrupted_summary_and_ends_what_the_job_started(
        tmp_path, mnist_root, local_ray, head, workers, where):
    import time

    from tests.helpers import alive, ctrl_c

    job = tmp_path / "long.yaml"
    job.write_text(job_text(mnist_root, tmp_path / "runs", "long", iters=100_000, eval_every=50))
    address = ["--address", head["gcs"]] if where == "head" else []
    done, started = ctrl_c(["submit", job, "--workers", workers, *address], "Iteration: 100.")
    assert done.returncode == 130, done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("error: interrupted; the last evaluated model is in ")
    run = tmp_path / "runs" / "long"
    summary = rundir.read_summary(run)
    assert summary.status == "interrupted" and summary.iterations >= 100
    # the workers left their loop together, before the summary: it describes the last checkpoint
    last = rundir.read_metrics(run)[-1]["iteration"]
    assert rundir.load_model(run / rundir.MODEL)["iteration"] == summary.iterations == last
    assert "Error in training function" not in done.stdout and not (run / rundir.STOP).exists()
    if where == "embedded":
        assert started and alive(started) == []  # the embedded Ray ended with the command
    else:  # the running cluster stays up, and the job's workers and controller have given its CPUs back
        deadline = time.monotonic() + 30
        while local_ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert local_ray.available_resources().get("CPU") == 2


def test_a_diverging_job_fails_once_instead_of_being_retried(local_ray, short_job):
    result = invoke("submit", short_job, "--set", "model.nonlinearity=relu", "--set", "train.lr=1.0e+6",
                    "--set", "scaling.max_failures=2")
    line = assert_one_line_error(result, 1)
    assert "Error in training function" not in result.stderr  # Ray Train's line for a worker that raised
    # the workers stopped themselves and said why (a retry from the same checkpoint would diverge again);
    # through Ray's retries the line would read "training failed: ..." after max_failures attempts
    assert line.startswith("error: training diverged: the loss was nan at iteration 50")
    run = short_job.parent / "runs" / "short"
    assert (run / ".failed").read_text() == line.removeprefix("error: ")
    summary = rundir.read_summary(run)
    assert summary.status == "failed" and summary.error == line.removeprefix("error: ")


def test_two_workers_recover_a_killed_one_exactly_and_a_failed_job_resumes_to_the_same_weights(
        local_ray, short_job, tmp_path, s3, head):
    # rank 1 exits once, between the checkpoints at 100 and 150: Ray Train restarts both workers from the last
    # checkpoint, here in an S3 bucket (the session's head node has the bucket's credentials, as a real cluster's
    # nodes carry their role)
    result = invoke("submit", short_job, "--workers", 2, "--set", f"output.storage={s3}", RNNJOB_FAULT="1:120")
    run = f"{s3}/short"
    summary = trained(result, run, 2)
    files = in_bucket(run)
    assert ".fault-injected" in files and any(f.startswith("ray/checkpoint_") for f in files)
    assert summary.restarts == 1
    state = rundir.load_model(run)
    assert state["iteration"] == 200 and not any(k.startswith("module.") for k in state["model"])  # no DDP prefix
    evaluated = invoke("eval", run, "--device", "cpu")
    assert evaluated.exit_code == 0, evaluated.output
    assert f"test accuracy {summary.final_accuracy:.2f}%" in evaluated.stdout
    # the same job, uninterrupted, into a folder, from a user's shell through `--address auto`: the address that
    # `ray start` recorded in Ray's temp folder (here the head's own, RAY_TMPDIR). The recovered run is the same
    # evaluation for evaluation, and weight for weight
    whole = rnnjob("submit", short_job, "--workers", 2, "--address", "auto", "--out", tmp_path / "whole",
                   RAY_TMPDIR=head["tmpdir"])
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert f"Ray dashboard: {head['jobs']}" in whole.stdout
    assert evaluations(run) == evaluations(tmp_path / "whole" / "short")
    assert weights_equal(run, tmp_path / "whole" / "short")
    # rank 1 dies after iteration 150's checkpoint, with no retry allowed: the job fails there, and a resume
    # carries it on to the same weights and evaluations, bit for bit
    failed = invoke("submit", short_job, "--workers", 2, "--out", tmp_path / "parts", "--set",
                    "scaling.max_failures=0", RNNJOB_FAULT="1:151")
    assert failed.exit_code == 1, failed.output
    stopped = tmp_path / "parts" / "short"
    assert rundir.read_summary(stopped).status == "failed" and rundir.load_model(stopped)["iteration"] == 150
    resumed = invoke("resume", stopped, "--workers", 2)
    assert resumed.exit_code == 0, resumed.output
    assert weights_equal(run, stopped) and evaluations(run) == evaluations(stopped)
    summary = rundir.read_summary(stopped)
    assert summary.status == "completed" and summary.workers == 2 and summary.resumes[0]["iteration"] == 150
