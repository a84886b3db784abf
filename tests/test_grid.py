"""Grids on Ray Tune: in this process, joined to the session's running Ray head (2 CPUs); stopped with Ctrl-C as a
user runs them, on an embedded Ray and on that head."""

import json
import math
import statistics
import time

import pytest
import torch

from rnn_mnist import report, rundir
from tests.helpers import evaluations, invoke, job_text, own_lines

pytestmark = pytest.mark.slow


def grid_file(tmp_path, mnist_root, name, body, **fields):
    path = tmp_path / f"{name}.yaml"
    path.write_text(job_text(mnist_root, tmp_path / "runs", name, iters=40, eval_every=20, **fields) + body)
    return path


def test_eight_trials_two_at_a_time_leave_eight_whole_run_directories(local_ray, tmp_path, mnist_root):
    path = grid_file(tmp_path, mnist_root, "eight",
                     "grid:\n  train.lr: [0.05, 0.1]\n  model.hidden_dim: [16, 24]\n  train.seed: [1, 2]\n")
    result = invoke("submit", path, "--max-concurrent", 2)
    assert result.exit_code == 0, result.output
    grid_dir = tmp_path / "runs" / "eight"
    trials = sorted(p.name for p in grid_dir.iterdir() if (p / "config.yaml").exists())
    assert trials == [f"lr={lr},hidden_dim={h},seed={seed}" for lr in ("0.05", "0.1") for h in (16, 24)
                      for seed in (1, 2)]
    for name in trials:
        run = grid_dir / name
        assert {"config.yaml", "metrics.jsonl", "model.pt", "summary.json", "progress.json"} <= \
            {p.name for p in run.iterdir()}
        summary = rundir.read_summary(run)
        assert summary.status == "completed" and summary.iterations == 40 and summary.name == name
        assert [m["iteration"] for m in rundir.read_metrics(run)] == [20, 40]
        assert rundir.load_model(run)["iteration"] == 40
        assert (run / "hparams").is_dir()  # TensorBoard's hparams view of the trial
    assert rundir.read_summary(grid_dir / "lr=0.05,hidden_dim=24,seed=1").params == 24 * 28 + 24 * 24 + 2 * 24 + 250
    assert "lr=0.1,hidden_dim=24,seed=2" in result.stdout and "completed" in result.stdout  # the results table
    # single-worker trials run in Tune's processes, reused from trial to trial: two at a time, two processes
    pids = {json.loads(line)["pid"] for result in (grid_dir / "tune").rglob("result.json")
            for line in result.read_text().splitlines() if line.strip()}
    assert len(pids) == 2


def test_single_and_two_worker_trials_side_by_side_and_a_failing_one_does_not_stop_the_grid(
        local_ray, tmp_path, mnist_root):
    # one worker: the trial trains in its Tune process; two: a TorchTrainer of its own. A relu rnn at lr 1e6
    # overflows to nan: that trial fails, with no retry (max_failures 0), on either path
    path = grid_file(tmp_path, mnist_root, "mixed", "scaling: {max_failures: 0}\n"
                     "grid:\n  scaling.workers: [1, 2]\n  train.lr: [0.01, 1.0e+6]\n", nonlinearity="relu")
    result = invoke("submit", path, "--iters", 20, "--set", "train.eval_every=10")
    assert result.exit_code == 1, result.output
    assert "2 of 4 trials failed; workers=1,lr=1000000.0: training diverged" in own_lines(result.stderr)[-1]
    grid_dir = tmp_path / "runs" / "mixed"
    for workers in (1, 2):
        good = rundir.read_summary(grid_dir / f"workers={workers},lr=0.01")
        bad = rundir.read_summary(grid_dir / f"workers={workers},lr=1000000.0")
        assert good.status == "completed" and good.iterations == 20 and good.workers == workers
        assert bad.status == "failed" and "training diverged" in bad.error
        assert (grid_dir / f"workers={workers},lr=0.01" / "ray").is_dir() == (workers == 2)  # Ray Train's storage
    table = invoke("results", grid_dir, "--format", "json")
    statuses = {row["name"]: row["status"] for row in json.loads(table.stdout)}
    assert statuses == {"workers=1,lr=0.01": "completed", "workers=1,lr=1000000.0": "failed",
                        "workers=2,lr=0.01": "completed", "workers=2,lr=1000000.0": "failed"}


def test_ctrl_c_while_the_trials_summaries_are_written_is_taken_once_all_are(local_ray, tmp_path, mnist_root,
                                                                            monkeypatch):
    # Tune has ended; Ctrl-C comes as the driver writes the first trial's summary (sent from that write,
    # so it lands there every time): every trial still gets its summary, the command its one line
    import os
    import signal

    finish, calls = rundir.finish, []

    def pressed_while_finishing(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return finish(*args, **kwargs)

    monkeypatch.setattr(rundir, "finish", pressed_while_finishing)
    path = grid_file(tmp_path, mnist_root, "late", "grid:\n  train.lr: [0.05, 0.1]\n")
    handler = signal.getsignal(signal.SIGINT)
    result = invoke("submit", path, "--iters", 20, "--set", "train.eval_every=10")
    assert result.exit_code == 130, result.output
    assert own_lines(result.stderr)[-1].startswith("error: interrupted; the trials' last evaluated models are in")
    assert len(calls) == 2
    for lr in ("0.05", "0.1"):
        summary = rundir.read_summary(tmp_path / "runs" / "late" / f"lr={lr}")
        assert summary.status == "completed" and summary.iterations == 20
    assert signal.getsignal(signal.SIGINT) is handler  # the command's own handlers are gone with it


def test_a_trial_killed_mid_run_recovers_exactly_and_matches_rnnjob_run_with_one_thread(local_ray, tmp_path,
                                                                                     mnist_root):
    from tests.helpers import rnnjob

    text = job_text(mnist_root, tmp_path / "runs", "exact", iters=60, eval_every=10, hidden=24)
    (tmp_path / "exact.yaml").write_text(text)
    (tmp_path / "exact_grid.yaml").write_text(text.replace("name: exact", "name: exact_grid")
                                              + "scaling: {max_failures: 1}\ngrid:\n  train.seed: [3]\n")
    # the trial's process exits at iteration 35; Tune starts another, which carries on from iteration 30
    result = invoke("submit", tmp_path / "exact_grid.yaml", RNNJOB_FAULT="0:35")
    assert result.exit_code == 0, result.output
    trial = tmp_path / "runs" / "exact_grid" / "seed=3"
    summary = rundir.read_summary(trial)
    assert summary.status == "completed" and summary.restarts == 1 and summary.threads == 1
    # a grid's trial has one CPU, so one thread: as `rnnjob run` with OMP_NUM_THREADS=1, to the last digit
    alone = rnnjob("run", tmp_path / "exact.yaml", "--seed", 3, "--device", "cpu", OMP_NUM_THREADS="1")
    assert alone.returncode == 0, alone.stderr
    assert evaluations(trial) == evaluations(tmp_path / "runs" / "exact") and len(evaluations(trial)) == 6


def test_a_preset_grid_with_asha_runs_every_trial(local_ray, tmp_path, mnist_root):
    for name, nonlinearity in [("tiny_relu", "relu"), ("tiny_tanh", "tanh")]:
        (tmp_path / f"{name}.yaml").write_text(
            f"model: {{hidden_dim: 16, nonlinearity: {nonlinearity}}}\n"
            f"train: {{iters: 60, eval_every: 20, lr: 0.05}}\ndata: {{root: {mnist_root}}}\n")
    path = tmp_path / "presets.yaml"
    path.write_text(f"output: {{dir: {tmp_path / 'runs'}}}\n"
                    "grid:\n  preset: [tiny_relu, tiny_tanh]\n"
                    "tune: {scheduler: asha, metric: accuracy, mode: max, grace_period: 1}\n")
    result = invoke("submit", path)
    assert result.exit_code == 0, result.output
    grid_dir = tmp_path / "runs" / "presets"
    for name, nonlinearity in [("tiny_relu", "relu"), ("tiny_tanh", "tanh")]:
        summary = rundir.read_summary(grid_dir / name)
        assert summary.status in ("completed", "stopped")  # asha may stop the weaker one early
        assert (summary.status == "completed") == (summary.iterations == 60)
        assert (grid_dir / name / "config.yaml").read_text().count(f"nonlinearity: {nonlinearity}") == 1


def test_a_repeated_grid_runs_each_combination_at_several_seeds_and_ranks_by_its_metric(
        local_ray, tmp_path, mnist_root):
    path = grid_file(tmp_path, mnist_root, "seeds", "grid:\n  train.lr: [0.05, 0.1]\nrepeat: 2\n"
                     "tune: {metric: val_accuracy}\n", validation=2000)
    result = invoke("submit", path, "--iters", 20, "--set", "train.eval_every=10", "--set", "train.seed=5")
    assert result.exit_code == 0, result.output
    # rnnjob's own lines only: not Tune's experiment box, nor its TensorBoard hint into Ray's session folder
    assert "Configuration for experiment" not in result.output and "View detailed results" not in result.output
    grid_dir = tmp_path / "runs" / "seeds"
    assert rundir.read_grid(grid_dir).repeat == 2  # as `rnnjob resume` reads the grid back
    for lr in ("0.05", "0.1"):
        configuration = grid_dir / f"lr={lr}"
        assert sorted(p.name for p in configuration.iterdir()) == ["seed=5", "seed=6"]
        a, b = (rundir.read_config(configuration / s) for s in ("seed=5", "seed=6"))
        assert (a.train.seed, b.train.seed) == (5, 6) and a.train.lr == b.train.lr == float(lr)
        assert a.model == b.model and a.data == b.data and a.train.iters == b.train.iters == 20
        for seed in ("seed=5", "seed=6"):
            assert rundir.read_summary(configuration / seed).status == "completed"
            assert (configuration / seed / "hparams").is_dir()
    # runs judged on validation accuracy are listed best validation accuracy first, and so are the
    # configurations: the mean and spread of their seeds
    shown = json.loads(invoke("results", grid_dir, "--format", "json").stdout)
    assert sorted(r["name"] for r in shown) == ["lr=0.05/seed=5", "lr=0.05/seed=6", "lr=0.1/seed=5", "lr=0.1/seed=6"]
    vals = [r["val_accuracy"] for r in shown]
    assert vals == sorted(vals, reverse=True)
    _, rows, _ = report.tables(grid_dir)
    assert [r["configuration"] for r in rows] == sorted(
        ("lr=0.05", "lr=0.1"), key=lambda c: -statistics.fmean(r["val_accuracy"] for r in shown
                                                                if r["name"].startswith(c + "/")))
    for row in rows:
        mine = [r for r in shown if r["name"].startswith(row["configuration"] + "/")]
        assert row["seeds"] == row["completed"] == 2
        assert math.isclose(row["final_accuracy_mean"], statistics.fmean(r["final_accuracy"] for r in mine))
        assert math.isclose(row["val_accuracy_std"], statistics.pstdev(r["val_accuracy"] for r in mine))
    assert "val_accuracy_mean" in invoke("results", grid_dir).stdout


def test_ctrl_c_on_a_grid_marks_each_unfinished_trial_interrupted(tmp_path, mnist_root):
    from tests.helpers import ctrl_c

    # no scheduler: nothing may stop a trial early, so `stopped` could only be a mislabelled Ctrl-C
    path = grid_file(tmp_path, mnist_root, "halted", "grid:\n  train.lr: [0.05, 0.1, 0.2]\n")
    done, _ = ctrl_c(["submit", path, "--iters", 100_000, "--set", "train.eval_every=50"], "Iteration: 50.")
    assert done.returncode == 130, done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("error: interrupted; the trials' last evaluated models")
    grid_dir = tmp_path / "runs" / "halted"
    statuses = {p.name: rundir.read_summary(p).status for p in grid_dir.iterdir() if (p / "config.yaml").exists()}
    assert statuses == {"lr=0.05": "interrupted", "lr=0.1": "interrupted", "lr=0.2": "interrupted"}
    # Tune ended the trials before the summaries were written: none checkpointed after its summary
    time.sleep(2)
    for run in (p for p in grid_dir.iterdir() if (p / "model.pt").exists()):
        assert rundir.load_model(run)["iteration"] == rundir.read_summary(run).iterations, run.name


def test_resume_of_a_grid_runs_only_its_unfinished_trials(tmp_path, mnist_root, head):
    from tests.helpers import ctrl_c, rnnjob

    # on the session's running head (the test above stops a grid on an embedded Ray)
    path = grid_file(tmp_path, mnist_root, "later", "grid:\n  train.lr: [0.05, 0.1, 0.2]\n")
    # at the first trial's last line: it has finished; the second may have begun
    done, _ = ctrl_c(["submit", path, "--iters", 600, "--set", "train.eval_every=50", "--max-concurrent", 1,
                      "--address", head["gcs"]], "Iteration: 600.")
    assert done.returncode == 130, done.stdout
    grid_dir = tmp_path / "runs" / "later"
    before = {p.name: rundir.read_summary(p) for p in grid_dir.iterdir() if (p / "config.yaml").exists()}
    finished = [name for name, s in before.items() if s.status == "completed"]
    assert finished and len(finished) < 3
    resumed = rnnjob("resume", grid_dir, "--address", head["gcs"], timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = {p.name: rundir.read_summary(p) for p in grid_dir.iterdir() if (p / "config.yaml").exists()}
    assert all(s.status == "completed" and s.iterations == 600 for s in after.values())
    assert all(after[name] == before[name] for name in finished)  # left as they were
    assert sum(1 for line in resumed.stdout.splitlines() if line.startswith("lr=")) == 3  # the table covers all


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_single_worker_trial_on_the_gpu_trains_in_its_tune_process_with_the_gpu_it_holds(tmp_path, mnist_root):
    import ray

    from rnn_mnist import ray_train

    ray_train.embedded()
    try:
        path = grid_file(tmp_path, mnist_root, "gpu", "scaling: {gpu: true}\ngrid:\n  train.lr: [0.05, 0.1]\n")
        result = invoke("submit", path)
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    for lr in ("0.05", "0.1"):
        summary = rundir.read_summary(tmp_path / "runs" / "gpu" / f"lr={lr}")
        assert summary.status == "completed" and summary.device == "cuda" and summary.workers == 1
