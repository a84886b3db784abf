"""`rnnjob submit` as a user runs it (and as `make run` does): a real process that starts its own Ray."""

import os
import subprocess

import pytest

from rnn_mnist import rundir
from tests.conftest import JOBS, RNNJOB

pytestmark = pytest.mark.slow


def test_submit_starts_an_embedded_ray_and_streams_rank_0(tmp_path, mnist_root):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run([RNNJOB, "submit", str(JOBS / "smoke.yaml"), "--out", str(tmp_path),
                           "--set", f"data.root={mnist_root}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ray dashboard: http://127.0.0.1:" in done.stdout
    assert done.stdout.count("Iteration: 30. Loss: ") == 1 and done.stdout.count("Iteration: 60. Loss: ") == 1
    summary = rundir.read_summary(tmp_path / "smoke")
    assert summary["workers"] == 1 and summary["threads"] == 2 and summary["iterations"] == 60
    assert done.stdout.strip().splitlines()[-1].startswith("done: ")
    assert "PreemptionWatcher" not in done.stdout + done.stderr  # no such actor on one machine
