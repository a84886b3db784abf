"""cluster/local.sh: a real two-node Ray cluster (head and worker node each in a network namespace the
script makes and removes, on a private bridge with no way out) with an S3 server on the bridge's host
address, and what `up` and `down` do when a node cannot start."""

import shutil
import subprocess
import time

import pytest

from rnn_mnist import rundir, storage
from tests.helpers import RAY, ROOT, clean_env, cluster, free_port, pgroups_alive, recorded_pids, rnnjob

pytestmark = pytest.mark.slow
NET = {"RNNJOB_CLUSTER_NAME": "rnntest", "RNNJOB_CLUSTER_SUBNET": "10.214.7"}


@pytest.fixture(scope="module")
def cluster_and_bucket(tmp_path_factory):
    """The two-node cluster, and an S3 server (cluster/s3.sh, moto's) on the bridge's host address, which
    both namespaces reach: the nodes start with the standard AWS variables that point at it, as nodes of a
    real cluster carry their own credentials (an instance role). Yields (the Jobs API address, those
    variables)."""
    import os
    import sys

    state = tmp_path_factory.mktemp("cluster")
    port = free_port()
    # the keys cluster/s3.sh prints (its server takes any)
    aws = {"AWS_ENDPOINT_URL": f"http://10.214.7.254:{port}", "AWS_ACCESS_KEY_ID": "rnnjob",
           "AWS_SECRET_ACCESS_KEY": "rnnjob", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    settings = {**NET, "RNNJOB_CLUSTER_STATE": str(state), "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port())}
    up = cluster("up", "--workers", 1, "--cpus", 1, **settings, **aws)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = recorded_pids(state)
    # the bridge exists now: the server listens on its host address only
    s3 = [ROOT / "cluster" / "s3.sh"]
    s3_env = clean_env(RNNJOB_S3_STATE=str(state.parent / "s3"), PYTHON=sys.executable)
    try:
        served = subprocess.run([*s3, "up", "--host", "10.214.7.254", "--port", str(port), "--bucket", "nodes"],
                                capture_output=True, text=True, timeout=120, env=s3_env)
        assert served.returncode == 0, served.stdout + served.stderr
        assert f"export AWS_ENDPOINT_URL={aws['AWS_ENDPOINT_URL']} AWS_ACCESS_KEY_ID=rnnjob " \
               "AWS_SECRET_ACCESS_KEY=rnnjob" in served.stdout, served.stdout
        yield f"http://10.214.7.1:{settings['RNNJOB_CLUSTER_DASHBOARD_PORT']}", aws
    finally:
        subprocess.run([*s3, "down"], capture_output=True, timeout=60, env=s3_env)
        down = cluster("down", timeout=120, **settings)
    assert down.returncode == 0, down.stderr
    assert pgroups_alive(pids) == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "rnntest" not in links and "rnntest" not in namespaces


@pytest.fixture(scope="module")
def two_nodes(cluster_and_bucket):
    return cluster_and_bucket[0]


def test_each_node_is_its_own_ray_node(two_nodes):
    status = subprocess.run([RAY, "status", "--address", "10.214.7.1:6379"], capture_output=True, text=True,
                            timeout=60, env=clean_env(RAY_AUTH_MODE="token"))
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" node_") == 2


def test_a_two_worker_job_runs_one_worker_per_node_into_shared_storage(two_nodes, tmp_path, mnist_root):
    shared = tmp_path / "shared"  # one file system for both namespaces: storage every node reaches
    job = tmp_path / "spread.yaml"
    job.write_text(f"model: {{hidden_dim: 16}}\ntrain: {{iters: 40, eval_every: 20, lr: 0.1}}\n"
                   f"data: {{root: {mnist_root}}}\noutput: {{storage: {shared}}}\n")
    done = rnnjob("submit", job, "--address", two_nodes, "--workers", 2)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = rundir.read_summary(shared / "spread")
    assert summary.workers == 2 and summary.status == "completed"
    assert len(summary.nodes) == 2 and len(set(summary.nodes)) == 2  # 1 CPU per node: one worker each
    assert summary.gradient_sync == "gloo"
    assert [m["iteration"] for m in rundir.read_metrics(shared / "spread")] == [20, 40]


def test_a_two_worker_job_on_two_nodes_writes_its_run_into_a_bucket(cluster_and_bucket, tmp_path, mnist_root,
                                                                      monkeypatch):
    address, aws = cluster_and_bucket
    job = tmp_path / "bucketed.yaml"
    job.write_text(f"model: {{hidden_dim: 16}}\ntrain: {{iters: 40, eval_every: 20, lr: 0.1}}\n"
                   f"data: {{root: {mnist_root}}}\noutput: {{storage: s3://nodes/runs}}\n")
    done = rnnjob("submit", job, "--address", address, "--workers", 2, **aws)
    assert done.returncode == 0, done.stdout + done.stderr
    for name, value in aws.items():  # this process reads the bucket as the driver did
        monkeypatch.setenv(name, value)
    run = "s3://nodes/runs/bucketed"
    summary = rundir.read_summary(run)
    assert summary.workers == 2 and summary.status == "completed" and len(set(summary.nodes)) == 2
    assert [m["iteration"] for m in rundir.read_metrics(run)] == [20, 40]
    assert rundir.load_model(run)["iteration"] == 40 and storage.exists(storage.join(run, "ray"))
    watched = rnnjob("watch", run, **aws)
    assert watched.returncode == 0 and "bucketed: completed, 40/40 iterations" in watched.stdout, watched.stderr


def test_a_token_sent_over_plain_http_off_loopback_is_one_warning_line(two_nodes):
    listed = rnnjob("list", "--address", two_nodes, RAY_AUTH_MODE="token")
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.strip().splitlines() == [
        f"warning: the Ray token goes to {two_nodes} unencrypted; use https://, or an SSH tunnel to 127.0.0.1 "
        "(ray dashboard, ssh -L)"]


def test_a_node_local_output_folder_is_refused_on_two_nodes(two_nodes, tmp_path, mnist_root):
    job = tmp_path / "local_only.yaml"
    job.write_text(f"data: {{root: {mnist_root}}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    done = rnnjob("submit", job, "--address", two_nodes, "--workers", 2)
    assert done.returncode == 1
    assert "output.storage: this cluster has 2 nodes" in done.stdout
    assert not (tmp_path / "runs").exists()


def test_up_creates_a_private_token_says_at_once_why_a_node_did_not_start_and_down_cleans_up(tmp_path):
    # a home without a token; the GCS port inside Ray's default worker-port range (10002-19999): `ray start`
    # refuses it and exits
    home = tmp_path / "home"
    home.mkdir()
    settings = {"HOME": str(home), "RNNJOB_CLUSTER_STATE": str(tmp_path / "state"), "RNNJOB_CLUSTER_PORT": "10500",
                "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port())}
    up = cluster("up", timeout=120, **settings)
    # the token is made before any node starts
    token = home / ".ray" / "auth_token"
    assert "created a Ray authentication token in ~/.ray/auth_token (0600)" in up.stdout
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
    assert up.returncode == 1
    assert up.stderr.startswith("cluster/local.sh: a Ray node exited while starting (its last line: ")
    assert "port" in up.stderr.split("its last line: ")[1]  # Ray's own words about the clash
    pids = recorded_pids(tmp_path / "state")
    down = cluster("down", timeout=60, **settings)
    assert down.returncode == 0 and down.stdout.strip() == "Ray cluster down"
    assert pgroups_alive(pids) == [] and not (tmp_path / "state").exists()


def fake_state(folder, pids, temps=()):
    folder.mkdir(mode=0o700)
    (folder / "pids").write_text("".join(f"{p}\n" for p in pids))
    if temps:
        (folder / "temps").write_text("".join(f"{t}\n" for t in temps))
    return {"RNNJOB_CLUSTER_STATE": str(folder)}


def test_down_signals_no_process_that_up_did_not_start(tmp_path):
    # pid 1, and a live process in its own session whose recorded start time is not its own (a pid reused
    # after a reboot, say): neither may be signalled
    stranger = subprocess.Popen(["setsid", "sleep", "300"])
    try:
        time.sleep(0.2)
        settings = fake_state(tmp_path / "state", ["1 0 x", f"{stranger.pid} 12345 x", "-1 0 x", "garbage"])
        down = cluster("down", timeout=60, **settings)
        assert down.returncode == 0 and down.stdout.strip() == "Ray cluster down", down.stderr
        assert f"left pid {stranger.pid} alone: it is not the process `up` started" in down.stderr
        assert stranger.poll() is None  # still running
    finally:
        stranger.kill()
        stranger.wait()


def test_down_removes_only_the_temp_folders_up_makes(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    settings = fake_state(tmp_path / "state", [], temps=[str(precious), "/", "/tmp/../etc", str(tmp_path)])
    assert cluster("down", timeout=60, **settings).returncode == 0
    assert precious.is_dir() and tmp_path.is_dir()


@pytest.mark.parametrize("action", ["up", "down"])
def test_a_state_folder_of_someone_else_is_refused(tmp_path, action):
    foreign = tmp_path / "state"
    foreign.mkdir()
    (foreign / "pids").write_text("1 0 x\n")
    shutil.chown(foreign, user=65534)
    done = cluster(action, timeout=60, RNNJOB_CLUSTER_STATE=str(foreign))
    assert done.returncode == 1 and "is not a folder of this user's" in done.stderr


def test_a_job_whose_head_dies_fails_within_a_minute_in_one_line_with_its_summary(tmp_path, mnist_root):
    import os
    import signal

    from tests.helpers import RNNJOB, as_from_a_shell, own_lines

    state = tmp_path / "state"
    port = free_port()
    settings = {"RNNJOB_CLUSTER_STATE": str(state), "RNNJOB_CLUSTER_PORT": str(port),
                "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port()), "RNNJOB_CLUSTER_AGENT_PORT": str(free_port())}
    up = cluster("up", "--cpus", 2, **settings)
    assert up.returncode == 0, up.stdout + up.stderr
    job = tmp_path / "doomed.yaml"
    job.write_text(f"model: {{hidden_dim: 16}}\ntrain: {{iters: 100000, eval_every: 100, lr: 0.1}}\n"
                   f"data: {{root: {mnist_root}}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    proc = subprocess.Popen([RNNJOB, "submit", job, "--address", f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env(), preexec_fn=as_from_a_shell)
    try:
        for line in proc.stdout:
            if "Iteration: 300." in line:  # three checkpoints in
                break
        for pid in recorded_pids(state):  # the head dies: every process of its group at once
            os.killpg(pid, signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        proc.kill()
        cluster("down", timeout=120, **settings)
    run = tmp_path / "runs" / "doomed"
    assert proc.returncode == 1 and took < 60, (took, out, err)
    (line,) = own_lines(err)
    # Ray may notice first (an actor unavailable), or the driver's own look at the head: the same line either way
    assert line.startswith(f"error: lost the Ray cluster at 127.0.0.1:{port} (its head no longer answers"), err
    assert line.endswith(f"); the run keeps its last checkpoint: carry it on with `rnnjob resume {run}`"), err
    summary = rundir.read_summary(run)
    assert summary.status == "failed" and summary.error == line.removeprefix("error: ")
    assert summary.iterations == rundir.load_model(run)["iteration"] >= 300  # at its last checkpoint
