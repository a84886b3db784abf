"""Ray's Jobs API as a user drives it (`rnnjob submit --address http://...`, list, status, logs, stop),
against a real single-node `ray start --head` on 127.0.0.1 shared by the module."""

import subprocess

import pytest

from rnn_mnist import rundir
from tests.conftest import RAY, ROOT, assert_one_line_error, clean_env, free_port, job_text, rnnjob

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_file(tmp_path_factory, mnist_root):
    folder = tmp_path_factory.mktemp("jobs")

    def write(name, iters):
        path = folder / f"{name}.yaml"
        path.write_text(job_text(mnist_root, folder / "runs", name, iters=iters, eval_every=20))
        return path

    return write


@pytest.fixture(scope="module")
def finished(head, job_file):
    """One short job submitted through the Jobs API and followed to its end."""
    path = job_file("remote", 40)
    done = rnnjob("submit", path, "--address", head["jobs"])
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = next(w for w in done.stdout.split() if w.startswith("raysubmit_"))
    return {"id": job_id, "stdout": done.stdout, "run": path.parent / "runs" / "remote"}


def test_a_job_submitted_through_the_jobs_api_succeeds_with_its_files(finished):
    assert "Iteration: 40. Loss: " in finished["stdout"]
    assert f"job {finished['id']} succeeded" in finished["stdout"]
    summary = rundir.read_summary(finished["run"])
    assert summary["status"] == "completed" and summary["iterations"] == 40


def test_the_submission_shows_in_rays_own_job_list(head, finished):
    listed = subprocess.run([RAY, "job", "list", "--address", head["jobs"]], capture_output=True, text=True,
                            timeout=60, env=clean_env(RAY_AUTH_MODE="token"))
    assert listed.returncode == 0, listed.stderr
    assert finished["id"] in listed.stdout


def test_list_status_and_logs(head, finished):
    listed = rnnjob("list", "--address", head["jobs"])
    assert listed.returncode == 0 and any(
        line.startswith(finished["id"]) and "SUCCEEDED" in line for line in listed.stdout.splitlines())
    status = rnnjob("status", finished["id"], "--address", head["jobs"])
    assert status.returncode == 0 and status.stdout.startswith(f"{finished['id']}: SUCCEEDED")
    logs = rnnjob("logs", finished["id"], "--address", head["jobs"])
    assert logs.returncode == 0 and "Iteration: 20. Loss: " in logs.stdout and "done: " in logs.stdout


def test_detach_returns_at_once_and_stop_ends_the_job(head, job_file):
    submitted = rnnjob("submit", job_file("long", 100_000), "--address", head["jobs"], "--detach")
    assert submitted.returncode == 0, submitted.stderr
    job_id = next(w for w in submitted.stdout.split() if w.startswith("raysubmit_"))
    running = rnnjob("status", job_id, "--address", head["jobs"])
    assert running.stdout.split()[1] in ("PENDING", "RUNNING")
    stopped = rnnjob("stop", job_id, "--address", head["jobs"])
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"{job_id}: STOPPED"
    assert rnnjob("status", job_id, "--address", head["jobs"]).stdout.startswith(f"{job_id}: STOPPED")


def test_submit_joins_a_running_cluster_by_its_gcs_address(head, job_file):
    done = rnnjob("submit", job_file("joined", 20), "--address", head["gcs"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Ray dashboard: {head['jobs']}" in done.stdout
    assert rundir.read_summary(job_file("joined", 20).parent / "runs" / "joined")["status"] == "completed"


@pytest.mark.parametrize("command", [["list"], ["status", "raysubmit_x"], ["logs", "raysubmit_x"],
                                     ["stop", "raysubmit_x"], ["submit", ROOT / "jobs" / "smoke.yaml"]])
def test_an_unreachable_address_is_one_line_and_exit_1(command):
    closed = f"http://127.0.0.1:{free_port()}"
    line = assert_one_line_error(rnnjob(*command, "--address", closed, timeout=15), 1)
    assert line == f"error: cannot reach a Ray dashboard at {closed}: Connection refused"


def test_an_unknown_job_id_is_one_line_and_exit_1(head):
    line = assert_one_line_error(rnnjob("status", "raysubmit_nope", "--address", head["jobs"], timeout=15), 1)
    assert line == f"error: no job raysubmit_nope on {head['jobs']}"


def test_a_rejected_token_is_one_line_and_exit_1(head):
    line = assert_one_line_error(rnnjob("list", "--address", head["jobs"], timeout=30, RAY_AUTH_TOKEN="not-the-token"),
                                 1)
    assert line == (f"error: the Ray cluster at {head['jobs']} rejected the authentication token; give it the "
                    "cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
