"""What several test modules share besides fixtures (those are in conftest.py): paths, small job files, the
CLI in this process or as a user runs it, one-line error checks, clean processes and free ports."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from rnn_mnist import rundir, storage
from rnn_mnist.cli import app

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"
RNNJOB = os.path.join(os.path.dirname(sys.executable), "rnnjob")  # the executable a user runs
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
RAY_LOG = re.compile(r"^(\x1b\[\d+m)?\(\w+ pid=|^\[\d{4}-\d\d-\d\d |^Token authentication is enabled")


def job_text(mnist_root, out, name="tiny", iters=20, eval_every=10, hidden=16, extra="", nonlinearity="tanh",
             validation=0) -> str:
    """A small job spec on the real data, writing below `out`: a few seconds of training. extra: more sections
    (a grid's, a search's); one of the sections here again would be refused (a key given twice)."""
    return (f"name: {name}\n"
            f"model: {{hidden_dim: {hidden}, layer_dim: 1, nonlinearity: {nonlinearity}}}\n"
            f"train: {{iters: {iters}, eval_every: {eval_every}, lr: 0.1, batch_size: 100}}\n"
            f"data: {{root: {mnist_root}, validation: {validation}}}\n"
            f"output: {{dir: {out}}}\n" + extra)


def evaluations(run) -> list:
    """A run's evaluations as (iteration, loss, accuracy), from its metrics.jsonl: what two runs that should
    be the same bit for bit are compared by."""
    return [(m["iteration"], m["loss"], m["accuracy"]) for m in rundir.read_metrics(run)]


def weights_equal(a, b) -> bool:
    """Whether two runs' (or model files') saved weights are the same, bit for bit."""
    import torch

    first, second = rundir.load_model(a)["model"], rundir.load_model(b)["model"]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def scalars(folder) -> dict:
    """Every scalar in a folder's TensorBoard event files, read by TensorBoard itself: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def invoke(*args, **env):
    """`rnnjob ARGS` in this process, through Typer's CliRunner."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env or None)


def own_lines(text: str) -> list[str]:
    """What rnnjob itself wrote, without the lines Ray adds (forwarded actor logs carry a prefix)."""
    return [line for line in text.strip().splitlines() if line.strip() and not RAY_LOG.match(line)]


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    """The command failed with `code` and said why in one line of its own on stderr, without a traceback.
    result: a CliRunner result or a CompletedProcess. Returns the line."""
    returncode = getattr(result, "exit_code", getattr(result, "returncode", None))
    stdout = getattr(result, "stdout", "") or ""
    assert returncode == code, f"exit {returncode}\n{stdout}\n{result.stderr}"
    lines = own_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    # rnnjob's own output; Ray's forwarded lines are left out: on a test module's shared Ray they include
    # late lines of earlier jobs (a controller's report of a worker killed on purpose, seen 100 s later)
    assert "Traceback" not in "\n".join(own_lines(stdout) + lines), stdout + result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """This process's environment without Ray's variables, plus `extra`: a user's fresh shell."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **extra}


def rnnjob(*args, timeout=300, **extra_env) -> subprocess.CompletedProcess:
    """`rnnjob ARGS` as a user runs it: the installed executable, in a clean environment."""
    return subprocess.run([RNNJOB, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(**extra_env))


def in_bucket(prefix) -> set:
    """The files below an s3:// prefix, as paths relative to it."""
    import pyarrow.fs as pafs

    fs, path = storage._fs(prefix)  # the file system rnnjob itself uses, its endpoint included
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return {i.path[len(path) + 1:] for i in infos if i.type == pafs.FileType.File}


def pgroups_alive(pids) -> list:
    """The process groups among pids that still have a running process (zombies are only waiting to be reaped)."""
    table = subprocess.run(["ps", "-eo", "pgid=,stat="], capture_output=True, text=True).stdout.split("\n")
    running = {int(line.split()[0]) for line in table if line.strip() and not line.split()[1].startswith("Z")}
    return sorted(set(pids) & running)


def recorded_pids(state) -> list[int]:
    """The process groups cluster/local.sh recorded in its state folder (each line: pid, start time, command)."""
    return [int(line.split()[0]) for line in (state / "pids").read_text().splitlines() if line.strip()]


def cluster(action: str, *args, timeout=300, **settings) -> subprocess.CompletedProcess:
    """cluster/local.sh ACTION ARGS with RNNJOB_CLUSTER_* settings."""
    return subprocess.run([ROOT / "cluster" / "local.sh", action, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=clean_env(**settings))


def as_from_a_shell() -> None:
    """preexec_fn for a command a test will Ctrl-C: a child inherits an ignored or blocked SIGINT across
    exec, and a user's shell hands the command a default one, whatever this test process's libraries
    (Ray, Tune) did to theirs."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ctrl_c(args, when: str, timeout=300, **extra_env):
    """Run `rnnjob ARGS`, press Ctrl-C (SIGINT) once a line of its output contains `when`, and wait for
    it to end. Returns (the CompletedProcess, the pids of every process it had started by then)."""
    import signal

    import psutil

    proc = subprocess.Popen([RNNJOB, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=clean_env(**extra_env), preexec_fn=as_from_a_shell)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if when in line:
            break
    children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=timeout)
    output = "".join(seen) + rest
    # stderr went into stdout, in order; the error line is the command's own last line
    return subprocess.CompletedProcess(proc.args, proc.returncode, output, output), children


def ctrl_c_once(args, ready, timeout=300, **extra_env):
    """Run `rnnjob ARGS` and press Ctrl-C (SIGINT) once ready() holds (a look at its files, every 0.1 s); wait
    for it to end. For a moment that the command's output cannot tell in time (Ray forwards workers' lines
    late, and folds alike ones together)."""
    import signal
    import tempfile
    import time

    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([RNNJOB, *map(str, args)], stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=clean_env(**extra_env), preexec_fn=as_from_a_shell)
        deadline = time.monotonic() + timeout
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=timeout)
        out.seek(0)
        output = out.read()
    return subprocess.CompletedProcess(proc.args, proc.returncode, output, output)


def alive(pids, within: float = 15.0) -> list:
    """The pids among these that still run (not zombies) after `within` seconds: a process that was
    signalled as its parent left may take a moment to end."""
    import time

    import psutil

    deadline = time.monotonic() + within
    while True:
        found = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    found.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
