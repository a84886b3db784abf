"""Ray's Jobs API as a user drives it (`rnnjob submit --address http://...`, list, status, logs, stop),
against the session's real single-node `ray start --head` on 127.0.0.1 (conftest's `head`)."""

import subprocess
import time
from pathlib import Path

import pytest

from rnn_mnist import rundir
from tests.helpers import RAY, ROOT, assert_one_line_error, clean_env, free_port, job_text, own_lines, rnnjob

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
    assert summary.status == "completed" and summary.iterations == 40


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


def test_detach_returns_at_once_stop_ends_the_job_and_watching_it_then_exits_1(head, job_file):
    job_id = submitted_id(rnnjob("submit", job_file("long", 100_000), "--address", head["jobs"], "--detach"))
    running = rnnjob("status", job_id, "--address", head["jobs"])
    assert running.stdout.split()[1] in ("PENDING", "RUNNING")
    stopped = rnnjob("stop", job_id, "--address", head["jobs"])
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"{job_id}: STOPPED"
    assert rnnjob("status", job_id, "--address", head["jobs"]).stdout.startswith(f"{job_id}: STOPPED")
    watched = rnnjob("watch", job_id, "--address", head["jobs"], timeout=120)
    assert watched.returncode == 1 and watched.stdout.strip(), watched.stdout + watched.stderr


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


def submitted_id(done) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return next(w for w in done.stdout.split() if w.startswith("raysubmit_"))


def test_watch_shows_a_grid_one_line_per_trial(head, job_file, tmp_path):
    grid = job_file("swept", 100).read_text() + "grid:\n  train.lr: [0.05, 0.1]\n"
    path = tmp_path / "swept.yaml"
    path.write_text(grid)
    job_id = submitted_id(rnnjob("submit", path, "--address", head["jobs"], "--detach"))
    watched = rnnjob("watch", job_id, "--address", head["jobs"], "--interval", 0.5, timeout=400)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    # a line for a trial whenever its evaluation or status changes: the last of each says how it ended
    last = {line.split(":")[0]: line for line in watched.stdout.splitlines() if line.startswith("lr=")}
    assert sorted(last) == ["lr=0.05", "lr=0.1"]
    assert all(": completed, 100/100 iterations" in line for line in last.values()), watched.stdout


# what goes up, and following a job: without a cluster

def test_the_upload_holds_the_package_and_the_job_files_and_nothing_else(tmp_path):
    from rnn_mnist import jobs_api

    for name in ("grid.yaml", "base.yaml", ".hidden.yaml", "other.yaml", ".env", "id_rsa"):
        (tmp_path / name).write_text("secret: 1\n")
    folder = jobs_api.stage([tmp_path / "grid.yaml", tmp_path / "base.yaml"])
    staged = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
    package = sorted(f"rnn_mnist/{p.relative_to(jobs_api.PACKAGE)}" for p in jobs_api.PACKAGE.rglob("*.py"))
    assert staged == sorted(package + ["jobs/base.yaml", "jobs/grid.yaml"])


class FlakyClient:
    """A Jobs API client whose connection drops twice while the job writes its last lines."""

    def __init__(self):
        self.calls = 0

    def get_job_status(self, job_id):
        self.calls += 1
        if self.calls in (3, 4):
            raise ConnectionError("connection reset by peer")
        return "RUNNING" if self.calls < 6 else "SUCCEEDED"

    def get_job_logs(self, job_id):
        lines = ["run directory: x", "Iteration: 10. Loss: 2.0. Accuracy: 11.00", "done: 11.00% test accuracy"]
        return "\n".join(lines[:min(self.calls, 3)]) + ("\n" if self.calls >= 6 else "")


def test_the_log_follower_rides_out_a_dropped_connection_and_ends_with_the_last_line(monkeypatch):
    from rnn_mnist import jobs_api

    client = FlakyClient()
    monkeypatch.setattr(jobs_api, "_job", lambda address, job_id: (client, None))
    monkeypatch.setattr(jobs_api, "POLL_S", 0.01)
    printed = []
    assert jobs_api.follow("http://127.0.0.1:1", "raysubmit_x", printed.append) == "SUCCEEDED"
    assert "\n".join(printed).splitlines() == ["run directory: x", "Iteration: 10. Loss: 2.0. Accuracy: 11.00",
                                              "done: 11.00% test accuracy"]


def test_a_cluster_python_without_the_dependencies_is_named_with_the_fix(head, job_file):
    done = rnnjob("submit", job_file("bare", 20), "--address", head["jobs"], "--python", "/usr/bin/python3",
                  timeout=300)
    # stdout carries the job's own log, the remote traceback included; rnnjob's verdict is one line
    assert done.returncode == 1 and "ModuleNotFoundError" in done.stdout
    (line,) = own_lines(done.stderr)
    assert "ended FAILED: the cluster's python has no module" in line and "--python" in line and "--pip" in line
    assert "Traceback" not in done.stderr


def tls_proxy(target_port: int, folder: Path):
    """An https front for the dashboard on 127.0.0.1 with a self-signed certificate for localhost:
    (its port, the certificate file, a stop function)."""
    import socket
    import ssl
    import threading

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        server.settimeout(0.5)
        while not stopping.is_set():
            try:
                raw, _ = server.accept()
            except OSError:
                continue
            try:
                secure = context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):  # the client's plain reachability check, say
                raw.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for a, b in ((secure, upstream), (upstream, secure)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()

    def stop():
        stopping.set()
        server.close()

    return server.getsockname()[1], cert, stop


def test_an_https_address_works(head, tmp_path):
    port, cert, stop = tls_proxy(int(head["jobs"].rsplit(":", 1)[1]), tmp_path)
    try:
        listed = rnnjob("list", "--address", f"https://localhost:{port}", REQUESTS_CA_BUNDLE=str(cert))
        assert listed.returncode == 0, listed.stderr
        assert "warning" not in listed.stderr  # encrypted: no word about the token
    finally:
        stop()


def test_ctrl_c_while_following_leaves_the_job_running_and_once_stopped_it_resumes_there_from_its_run_directory(
        head, job_file):
    import signal

    from tests.helpers import RNNJOB, as_from_a_shell, clean_env

    path = job_file("revived", 100_000)
    run = path.parent / "runs" / "revived"
    following = subprocess.Popen([RNNJOB, "submit", str(path), "--address", head["jobs"]], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=clean_env(), preexec_fn=as_from_a_shell)
    first = following.stdout.readline()  # "submitted raysubmit_... to ..."
    job_id = next(w for w in first.split() if w.startswith("raysubmit_"))
    try:
        time.sleep(2)
        following.send_signal(signal.SIGINT)
        out, err = following.communicate(timeout=60)
        assert following.returncode == 130, out + err
        line = assert_one_line_error(subprocess.CompletedProcess([], 130, out, err), 130,
                                     f"stopped following {job_id}, which keeps running on the cluster",
                                     f"rnnjob logs {job_id} --follow --address {head['jobs']}",
                                     f"rnnjob stop {job_id} --address {head['jobs']}")
        assert line.startswith("error: ")
        assert rnnjob("status", job_id, "--address", head["jobs"]).stdout.split()[1] in ("PENDING", "RUNNING")
        deadline = time.time() + 120
        while not (run / "model.pt").exists() and time.time() < deadline:
            time.sleep(0.5)
    finally:  # on the cluster, the job runs until it is stopped
        stopped = rnnjob("stop", job_id, "--address", head["jobs"])
    assert stopped.stdout.strip() == f"{job_id}: STOPPED"
    summary = rundir.read_summary(run)  # the driver ended as on Ctrl-C
    assert summary.status == "interrupted" and summary.iterations >= 20
    time.sleep(2)  # no worker goes on after the driver: the summary describes the last checkpoint
    last = rundir.read_metrics(run)[-1]["iteration"]
    assert rundir.load_model(run / "model.pt")["iteration"] == summary.iterations == last
    resumed = rnnjob("resume", run, "--iters", 200, "--address", head["jobs"], timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    line = f"run directory: {run}  (resuming at iteration {summary.iterations}, to 200 iterations)"
    assert line in resumed.stdout, resumed.stdout
    after = rundir.read_summary(run)
    assert after.status == "completed" and after.iterations == 200
    assert after.resumes[0]["iteration"] == summary.iterations
