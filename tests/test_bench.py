"""`make bench-quick`: the benchmark harness end to end, one round of 300 iterations."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
FIELDS = {"wall_seconds", "train_seconds", "samples_per_second", "peak_rss_mb", "final_accuracy", "wall_ratio_to_a",
          "round_ratio_to_a"}


def test_bench_quick_measures_all_four_variants_side_by_side(tmp_path, mnist_root):
    done = subprocess.run([sys.executable, ROOT / "benchmarks" / "bench.py", "--rounds", "1", "--iters", "300",
                           "--first-seed", "4", "--results", tmp_path],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    (written,) = tmp_path.glob("bench-cpu-300-*.json")
    report = json.loads(written.read_text())
    assert set(report["medians"]) == {"a", "b", "c", "d"} and report["iters"] == 300 and report["rounds"] == 1
    for variant, m in report["medians"].items():
        assert set(m) == FIELDS, variant
        assert m["wall_seconds"] > m["train_seconds"] > 0 and m["peak_rss_mb"] > 100
        assert m["samples_per_second"] == pytest.approx(300 * 100 / m["train_seconds"])
        assert 10 < m["final_accuracy"] <= 100
    assert report["medians"]["a"]["wall_ratio_to_a"] == report["medians"]["a"]["round_ratio_to_a"] == 1.0
    assert [run["seed"] for runs in report["runs"].values() for run in runs] == [4, 4, 4, 4]
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch"] and report["machine"]["ray"]
    for line in ("(a) tutorial pipeline", "(b) rnnjob run", "(c) rnnjob submit --workers 1", str(written)):
        assert line in done.stdout
