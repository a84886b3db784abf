"""The timeline marks: written only where $RNNJOB_TIMELINE asks, one whole JSON line each, and a
real run's marks in the order its life goes."""

import json
import os
import subprocess
import sys
import time

import pytest

from rnn_mnist import timeline
from tests.helpers import rnnjob


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(timeline.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    timeline.mark("anything")
    assert list(tmp_path.iterdir()) == []


def test_marks_are_whole_lines_with_time_and_process(tmp_path, monkeypatch):
    path = tmp_path / "marks.jsonl"
    monkeypatch.setenv(timeline.ENV, str(path))
    before = time.time()
    timeline.mark("one")
    timeline.mark("two", at=12.5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [m["what"] for m in lines] == ["one", "two"] and {m["pid"] for m in lines} == {os.getpid()}
    assert before <= lines[0]["t"] <= time.time() and lines[1]["t"] == 12.5
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_process_started_before_its_first_line_ran():
    code = "import time; from rnn_mnist import timeline; print(time.time() - timeline.process_started())"
    took = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < took < 60


def test_a_worker_adopts_the_drivers_setting(tmp_path, monkeypatch):
    monkeypatch.delenv(timeline.ENV, raising=False)
    timeline.adopt(None)
    assert timeline.setting() is None
    timeline.adopt(str(tmp_path / "m"))
    assert timeline.setting() == str(tmp_path / "m")


@pytest.mark.slow
def test_a_local_run_marks_its_life_in_order(tmp_path, job_file):
    marks = tmp_path / "marks.jsonl"
    done = rnnjob("run", job_file(), "--device", "cpu", RNNJOB_TIMELINE=str(marks))
    assert done.returncode == 0, done.stderr
    seen = [json.loads(line) for line in marks.read_text().splitlines()]
    order = ["driver process started", "driver imports done", "model ready", "data loaded", "first step done",
             "evaluation started", "evaluation reported", "loop ended", "summary written"]
    firsts = [next(m["t"] for m in seen if m["what"] == what) for what in order]
    assert firsts == sorted(firsts)
    assert sum(m["what"] == "evaluation reported" for m in seen) == 2  # 20 iterations, every 10
