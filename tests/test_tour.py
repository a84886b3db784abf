"""The README's tour, as written: its command block read out of README.md and run line by line in a fresh
copy of the repository (the files git tracks or would track: no .venv, no runs), as a new user runs it after
`make run` and `. .venv/bin/activate`, with a home folder of its own (Ray's token, the cluster's state and a
submitted job's runs land there). Shortened through one documented switch only, `--iters`: every rnnjob command
that trains gets `--iters 60`, and resume's 6000 becomes 120.

The copy's .venv borrows the installed dependencies (one .pth line) instead of waiting minutes for pip, and has
the same console scripts; MNIST is linked in, as `make run` would have fetched it. As root, the tour runs in a
network namespace of its own: the fixed ports it uses (Ray's, Prometheus's, TensorBoard's) are its alone while
the rest of the suite runs beside it."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnn_mnist import rundir
from tests.helpers import ROOT, own_lines

pytestmark = pytest.mark.slow
ITERS = 60
PORTS = {6379: "Ray's GCS", 8265: "Ray's dashboard", 9090: "Prometheus", 6006: "TensorBoard"}


def tour() -> list[str]:
    """The command lines of the README's tour, comments left out."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## A five-minute tour", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def fresh_copy(dest: Path) -> Path:
    """The repository's files as a fresh clone of this tree holds them, with a ready .venv."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", dest / ".venv"], check=True)
    (site,) = (dest / ".venv" / "lib").glob("python3*/site-packages")
    parent_site = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "rnnjob-tour.pth").write_text(f"{dest}\n{parent_site}\n")  # this copy's rnn_mnist first
    python = dest / ".venv" / "bin" / "python"
    for script in Path(sys.executable).parent.iterdir():  # ray, tensorboard, ...: the same, on this python
        if script.is_file() and not (dest / ".venv" / "bin" / script.name).exists():
            head = script.read_bytes()[:200]
            if head.startswith(b"#!") and b"python" in head.split(b"\n")[0]:
                text = script.read_text()
                (dest / ".venv" / "bin" / script.name).write_text(f"#!{python}\n" + text.split("\n", 1)[1])
                (dest / ".venv" / "bin" / script.name).chmod(0o755)
    (dest / ".venv" / "bin" / "rnnjob").write_text(f"#!{python}\nfrom rnn_mnist.cli import entry\nentry()\n")
    (dest / ".venv" / "bin" / "rnnjob").chmod(0o755)
    (dest / ".venv" / ".installed").touch()  # make's set-up is done
    (dest / "data").symlink_to(ROOT / "data")
    return dest


@contextlib.contextmanager
def own_network():
    """A network namespace of the tour's own, its loopback up: the fixed ports the tour uses (those above, and
    Ray's 10001 and 52365) are its alone, whatever else runs on this machine meanwhile (the rest of the suite, in
    pytest-xdist's other process). Yields the prefix that runs a command there. As root with `ip` only; elsewhere
    the tour runs in this machine's own network (yields [])."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        yield []
        return
    name = f"rnnjob-tour-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def busy(port: int, inside: list) -> bool:
    probe = subprocess.run([*inside, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], capture_output=True)
    return probe.returncode == 0


def tensorboard_runs(inside: list, wait_s: float = 60.0) -> str:
    """The runs TensorBoard on 127.0.0.1:6006 lists (its data API), once it answers."""
    deadline = time.monotonic() + wait_s
    while True:
        answer = subprocess.run([*inside, "curl", "-fsS", "--max-time", "10", "http://127.0.0.1:6006/data/runs"],
                                capture_output=True, text=True)
        if answer.returncode == 0:
            return answer.stdout
        assert time.monotonic() < deadline, answer.stderr
        time.sleep(1)


def shortened(line: str, submitted: list) -> str:
    if re.match(r"rnnjob (run|submit) ", line):
        return f"{line} --iters {ITERS}"
    if line.startswith("rnnjob resume "):
        return re.sub(r"--iters \d+", f"--iters {2 * ITERS}", line)
    if line.startswith("rnnjob watch raysubmit_..."):
        return line.replace("raysubmit_...", submitted[-1])
    return line


def test_the_readme_tour_runs_as_written(tmp_path, mnist_root):
    with own_network() as inside:
        if inside:  # `make monitor-up` installs Prometheus where it is missing: not from in there (no way out)
            ready = subprocess.run([ROOT / "cluster" / "monitor.sh", "install"], capture_output=True, text=True,
                                   timeout=900, env={**os.environ, "RNNJOB_MONITOR_STATE": str(tmp_path / "m")})
            assert ready.returncode == 0, ready.stdout + ready.stderr
        run_the_tour(tmp_path, inside)


def run_the_tour(tmp_path, inside):
    taken = [f"{port} ({what})" for port, what in PORTS.items() if busy(port, inside)]
    assert not taken, f"the tour needs these ports of 127.0.0.1 free: {', '.join(taken)}"
    lines = tour()
    assert lines[0] == "rnnjob run jobs/model_c.yaml" and lines[-1] == "kill %1"
    repo = fresh_copy(tmp_path / "rnnjob")
    home = tmp_path / "home"
    home.mkdir()
    if inside:  # a job on the cluster fetches MNIST into its home (rnnjob's home folder) from the package registry,
        # which the tour's own network does not reach (test_data fetches from it): there, it finds it fetched
        (home / "rnnjob").mkdir()
        (home / "rnnjob" / "data").symlink_to(ROOT / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RNNJOB_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{repo / '.venv' / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(repo / ".venv"))
    background, submitted, said = [], [], {}
    try:
        for line in lines:
            command = shortened(line, submitted)
            if command == "kill %1":  # the shell's first background job
                os.killpg(background[0].pid, signal.SIGTERM)
                assert background[0].wait(timeout=30) is not None
                continue
            if command.endswith("&"):
                background.append(subprocess.Popen([*inside, "bash", "-c", command[:-1]], cwd=repo, env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
                continue
            done = subprocess.run([*inside, "bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            assert "Traceback" not in "\n".join(own_lines(done.stdout) + own_lines(done.stderr)), command
            said[line] = done.stdout
            submitted += re.findall(r"submitted (raysubmit_\w+)", done.stdout)
            if line == "make cluster-up":  # TensorBoard, started before it, has had the time to come up
                listed = tensorboard_runs(inside)
                assert "model_c" in listed and "compare_abc/model_a" in listed
    finally:
        for job in background:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
        subprocess.run([*inside, "make", "monitor-down", "cluster-down"], cwd=repo, env=env, capture_output=True,
                       timeout=120)
    runs = repo / "runs"
    # the tutorial's line, as the README shows one
    assert re.search(r"^Iteration: 60\. Loss: \d+\.\d+\. Accuracy: \d+\.\d\d$", said[lines[0]], re.M)
    assert rundir.read_summary(runs / "model_c-2").workers == 2
    assert {p.name for p in (runs / "compare_abc").iterdir() if (p / "summary.json").exists()} == {
        "model_a", "model_b", "model_c"}
    assert "model_c" in said["rnnjob results runs/compare_abc"] and (repo / "abc.png").stat().st_size > 10_000
    watched = said["rnnjob watch raysubmit_..."]
    assert f"{ITERS}/{ITERS} iterations" in watched and "completed" in watched, watched
    assert rundir.read_summary(home / "rnnjob" / "runs" / "model_c").status == "completed"  # the cluster's home
    resumed = rundir.read_summary(runs / "model_c")
    assert resumed.iterations == 2 * ITERS and [r["iteration"] for r in resumed.resumes] == [ITERS]
    assert not any(busy(port, inside) for port in (8265, 9090, 6006))  # everything the tour started has ended
