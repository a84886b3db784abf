"""cluster/local.sh: a real two-node Ray cluster (head and worker node each in a network namespace the
script makes and removes, on a private bridge with no way out), and what `up` and `down` do when a
node cannot start."""

import subprocess

import pytest

from rnn_mnist import rundir
from tests.conftest import RAY, clean_env, cluster, free_port, pgroups_alive, rnnjob

pytestmark = pytest.mark.slow
NET = {"RNNJOB_CLUSTER_NAME": "rnntest", "RNNJOB_CLUSTER_SUBNET": "10.214.7"}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    settings = {**NET, "RNNJOB_CLUSTER_STATE": str(state), "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port())}
    up = cluster("up", "--workers", 1, "--cpus", 1, **settings)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = [int(p) for p in (state / "pids").read_text().split()]
    yield f"http://10.214.7.1:{settings['RNNJOB_CLUSTER_DASHBOARD_PORT']}"
    down = cluster("down", timeout=120, **settings)
    assert down.returncode == 0, down.stderr
    assert pgroups_alive(pids) == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "rnntest" not in links and "rnntest" not in namespaces


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
    assert summary["workers"] == 2 and summary["status"] == "completed"
    assert len(summary["nodes"]) == 2 and len(set(summary["nodes"])) == 2  # 1 CPU per node: one worker each
    assert summary["gradient_sync"] == "gloo"
    assert [m["iteration"] for m in rundir.read_metrics(shared / "spread")] == [20, 40]


def test_a_node_local_output_folder_is_refused_on_two_nodes(two_nodes, tmp_path, mnist_root):
    job = tmp_path / "local_only.yaml"
    job.write_text(f"data: {{root: {mnist_root}}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    done = rnnjob("submit", job, "--address", two_nodes, "--workers", 2)
    assert done.returncode == 1
    assert "output.storage: this cluster has 2 nodes" in done.stdout
    assert not (tmp_path / "runs").exists()


def test_up_says_at_once_why_a_node_did_not_start_and_down_cleans_up(tmp_path):
    # the GCS port inside Ray's default worker-port range (10002-19999): `ray start` refuses it and exits
    settings = {"RNNJOB_CLUSTER_STATE": str(tmp_path / "state"), "RNNJOB_CLUSTER_PORT": "10500",
                "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port())}
    up = cluster("up", timeout=120, **settings)
    assert up.returncode == 1
    assert up.stderr.startswith("cluster/local.sh: a Ray node exited while starting (its last line: ")
    assert "port" in up.stderr.split("its last line: ")[1]  # Ray's own words about the clash
    pids = [int(p) for p in (tmp_path / "state" / "pids").read_text().split()]
    down = cluster("down", timeout=60, **settings)
    assert down.returncode == 0 and down.stdout.strip() == "Ray cluster down"
    assert pgroups_alive(pids) == [] and not (tmp_path / "state").exists()
