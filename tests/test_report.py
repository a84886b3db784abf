"""Results tables and plots, read from real run directories."""

import csv
import io
import json
import subprocess
import time

import pytest

from rnn_mnist import report, rundir
from rnn_mnist.report import COLUMNS, cell
from tests.helpers import RNNJOB, assert_one_line_error, invoke, rnnjob


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_root):
    """Three real runs: two that finish (one nested, as a grid's trials are) and one that diverges."""
    root = tmp_path_factory.mktemp("runs")
    job = root.parent / "tiny.yaml"
    job.write_text(f"model: {{hidden_dim: 16}}\ntrain: {{iters: 20, eval_every: 10, lr: 0.1}}\n"
                   f"data: {{root: {mnist_root}}}\n")
    for args in (["--out", root], ["--out", root / "grid", "--set", "train.lr=0.05"],
                 ["--out", root, "--set", "model.nonlinearity=relu", "--set", "train.lr=1.0e+6"]):
        invoke("run", job, *args)
    return root


def results(root, fmt):
    result = invoke("results", root, "--format", fmt)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_json_has_every_run_and_column_best_first(runs):
    rows = json.loads(results(runs, "json"))
    assert [r["name"] for r in rows[:2]] in (["tiny", "grid/tiny"], ["grid/tiny", "tiny"])
    assert rows[-1]["name"] == "tiny-2" and rows[-1]["status"] == "failed"
    assert all(list(r) == COLUMNS for r in rows)
    assert rows[0]["final_accuracy"] >= rows[1]["final_accuracy"]
    tiny = next(r for r in rows if r["name"] == "tiny")
    assert (tiny["cell"], tiny["layers"], tiny["hidden"], tiny["lr"], tiny["iterations"]) == ("rnn", 1, 16, 0.1, 20)
    assert (tiny["workers"], tiny["device"], tiny["status"]) == (1, "cpu", "completed")


def test_csv_and_markdown_parse_back_to_the_same_rows(runs):
    expected = [{c: cell(r[c]) for c in COLUMNS} for r in json.loads(results(runs, "json"))]
    from_csv = list(csv.DictReader(io.StringIO(results(runs, "csv"))))
    lines = results(runs, "markdown").strip().splitlines()
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "")) == {"-"}
    from_md = [dict(zip(header, (v.strip() for v in line.strip("|").split("|")))) for line in lines[2:]]
    assert from_csv == expected and from_md == expected and len(expected) == 3


def test_the_table_lists_every_run_with_a_header(runs):
    lines = results(runs, "table").strip().splitlines()
    assert lines[0].split() == COLUMNS
    assert len(lines) == 4 and "failed" in lines[-1]


def test_plot_writes_a_png(runs, tmp_path):
    out = tmp_path / "fig.png"
    result = invoke("plot", runs, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (2 run(s))" in result.stdout  # the diverged run has no metrics to draw
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(str(out)).shape[:2] == (550, 1430)


def test_plot_of_a_folder_without_runs_fails(tmp_path):
    result = invoke("plot", tmp_path)
    assert result.exit_code == 1 and "nothing to plot" in result.stderr


@pytest.mark.parametrize("args,fragment", [
    (["results", "/nonexistent/runs"], "/nonexistent/runs: no such directory"),
    (["results", ".", "--format", "xml"], "--format: expected one of table, csv, json, markdown"),
    (["plot", "/nonexistent/runs"], "/nonexistent/runs: no such directory"),
])
def test_bad_arguments_exit_2(args, fragment):
    result = invoke(*args)
    assert result.exit_code == 2 and fragment in result.stderr


# rnnjob watch on run directories (a Jobs API submission: test_jobs_api)

def test_watch_on_a_finished_run_prints_its_final_state_at_once(runs):
    result = invoke("watch", runs / "tiny")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.strip().splitlines()
    assert line.startswith("tiny: completed, 20/20 iterations, loss ") and "accuracy " in line


def test_watch_on_a_failed_run_exits_1(runs):
    result = invoke("watch", runs / "tiny-2")
    assert result.exit_code == 1 and result.stdout.startswith("tiny-2: failed, ") and "diverged" in result.stdout


@pytest.mark.slow
def test_watch_follows_a_running_job_to_its_end(job_file, tmp_path):
    job = job_file("live", iters=600, eval_every=100)
    training = subprocess.Popen([RNNJOB, "run", str(job), "--device", "cpu"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    run = tmp_path / "runs" / "live"
    deadline = time.time() + 120
    while not (run / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    watched = rnnjob("watch", run, "--interval", 0.2, timeout=300)
    assert training.wait(timeout=300) == 0
    assert watched.returncode == 0, watched.stdout + watched.stderr
    lines = watched.stdout.strip().splitlines()
    assert any(line.startswith("live: running, ") for line in lines)  # seen while it trained
    assert lines[-1].startswith("live: completed, 600/600 iterations")
    assert f"accuracy {rundir.read_summary(run).final_accuracy:.2f}%" in lines[-1]


@pytest.mark.parametrize("target,fragment", [("/nonexistent/run", "no such run or grid directory"),
                                             (".", "no run directory at or below it")])
def test_watch_refuses_what_is_not_a_run(target, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(invoke("watch", target), 2, fragment)


def test_a_job_known_only_by_its_status_is_one_line_without_iterations():
    assert report.line(report.status_row("raysubmit_x", report.Live.RUNNING)) == "raysubmit_x: running"
    assert report.line(report.status_row("raysubmit_x", "completed")) == "raysubmit_x: completed"
