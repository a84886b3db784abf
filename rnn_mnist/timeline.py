"""Where a job's wall time goes: timestamped marks from the driver and every worker, appended as
JSON lines to the file named by $RNNJOB_TIMELINE. A measuring aid (`benchmarks/overhead.py` reads
it); without the variable nothing is written.

A Ray job's workers get the driver's setting through their train_loop_config (`adopt`): on a
running cluster they are started by the raylet, not by the driver, and do not inherit its
environment.
"""

import json
import os
import time
from typing import Optional

ENV = "RNNJOB_TIMELINE"


def mark(what: str, at: Optional[float] = None) -> None:
    """Record that `what` happened at `at` (wall clock, default now), with this process's id."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"t": time.time() if at is None else at, "pid": os.getpid(), "what": what}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # one write per line: lines never mix
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def process_started() -> float:
    """When this process started (wall clock), from /proc: the time before Python's first line ran."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def setting() -> Optional[str]:
    """The file this process marks into, to hand to processes that do not inherit its environment."""
    return os.environ.get(ENV)


def adopt(path: Optional[str]) -> None:
    if path:
        os.environ[ENV] = path
