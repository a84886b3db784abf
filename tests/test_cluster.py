"""A real single-node `ray start --head` on 127.0.0.1 (cluster/local.sh, under its own process
groups), driven through Ray's Jobs API as a user would: `rnnjob submit --address http://...`."""

import os
import socket
import subprocess
import sys

import pytest

from rnn_mnist import rundir
from tests.conftest import RNNJOB, ROOT

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**clean, **extra}


def rnnjob(*args, timeout=300, **extra_env):
    return subprocess.run([RNNJOB, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env(**extra_env))


def pgroups_alive(pids) -> list:
    """The process groups among pids that still have a running process (zombies are only waiting to be reaped)."""
    table = subprocess.run(["ps", "-eo", "pgid=,stat="], capture_output=True, text=True).stdout.split("\n")
    running = {int(line.split()[0]) for line in table if line.strip() and not line.split()[1].startswith("Z")}
    return sorted(set(pids) & running)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    ports = {"RNNJOB_CLUSTER_STATE": str(state), "RNNJOB_CLUSTER_PORT": str(free_port()),
             "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port())}
    up = subprocess.run([ROOT / "cluster" / "local.sh", "up", "--cpus", "2"], capture_output=True, text=True,
                        timeout=300, env=env(**ports))
    assert up.returncode == 0, up.stdout + up.stderr
    pids = [int(p) for p in (state / "pids").read_text().split()]
    yield {"jobs": f"http://127.0.0.1:{ports['RNNJOB_CLUSTER_DASHBOARD_PORT']}",
           "gcs": f"127.0.0.1:{ports['RNNJOB_CLUSTER_PORT']}"}
    down = subprocess.run([ROOT / "cluster" / "local.sh", "down"], capture_output=True, text=True, timeout=120,
                          env=env(**ports))
    assert down.returncode == 0, down.stderr
    assert pgroups_alive(pids) == [] and not state.exists()


@pytest.fixture(scope="module")
def job_file(tmp_path_factory, mnist_root):
    folder = tmp_path_factory.mktemp("jobs")

    def write(name, iters):
        path = folder / f"{name}.yaml"
        path.write_text(f"model: {{hidden_dim: 16}}\ntrain: {{iters: {iters}, eval_every: 20, lr: 0.1}}\n"
                        f"data: {{root: {mnist_root}}}\noutput: {{dir: {folder / 'runs'}}}\n")
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
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    listed = subprocess.run([ray, "job", "list", "--address", head["jobs"]], capture_output=True, text=True,
                            timeout=60, env=env(RAY_AUTH_MODE="token"))
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
    done = rnnjob(*command, "--address", closed, timeout=15)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: cannot reach a Ray dashboard at {closed}: Connection refused"


def test_an_unknown_job_id_is_one_line_and_exit_1(head):
    done = rnnjob("status", "raysubmit_nope", "--address", head["jobs"], timeout=15)
    assert done.returncode == 1 and done.stderr.strip() == f"error: no job raysubmit_nope on {head['jobs']}"


def test_a_rejected_token_is_one_line_and_exit_1(head):
    done = rnnjob("list", "--address", head["jobs"], timeout=30, RAY_AUTH_TOKEN="not-the-token")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: the Ray cluster at {head['jobs']} rejected the authentication token; give it the cluster's "
        "token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"]


def test_up_says_at_once_why_a_node_did_not_start_and_down_cleans_up(tmp_path):
    # the GCS port inside Ray's default worker-port range (10002-19999): `ray start` refuses it and exits
    ports = {"RNNJOB_CLUSTER_STATE": str(tmp_path / "state"), "RNNJOB_CLUSTER_PORT": "10500",
             "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port())}
    up = subprocess.run([ROOT / "cluster" / "local.sh", "up"], capture_output=True, text=True, timeout=120,
                        env=env(**ports))
    assert up.returncode == 1
    assert up.stderr.startswith("cluster/local.sh: a Ray node exited while starting (its last line: ")
    assert "port" in up.stderr.split("its last line: ")[1]  # Ray's own words about the clash
    pids = [int(p) for p in (tmp_path / "state" / "pids").read_text().split()]
    down = subprocess.run([ROOT / "cluster" / "local.sh", "down"], capture_output=True, text=True, timeout=60,
                          env=env(**ports))
    assert down.returncode == 0 and down.stdout.strip() == "Ray cluster down"
    assert pgroups_alive(pids) == [] and not (tmp_path / "state").exists()
