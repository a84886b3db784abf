"""A run's life in this process (runs.local): checks first, then the directory, training, and a summary
on every outcome. (Ray jobs and grids go through the same owner: test_ray_train, test_grid.)"""

from pathlib import Path

import pytest

from rnn_mnist import rundir, runs
from rnn_mnist import spec as specs
from rnn_mnist.errors import BadInput, Interrupted, RunFailed
from tests.helpers import evaluations, weights_equal


def quiet(line):
    pass


def test_a_completed_run_leaves_its_whole_directory(job_file):
    run, summary = runs.local(specs.load(job_file()), "cpu", quiet)
    names = {p.name for p in Path(run).iterdir()}
    assert {"config.yaml", "metrics.jsonl", "model.pt", "summary.json", "progress.json", ".lock"} <= names
    assert len(names) == 7 and any(n.startswith("events.out.tfevents.") for n in names)  # and TensorBoard's
    assert summary == rundir.read_summary(run) and summary.status == "completed" and summary.iterations == 20
    assert rundir.read_config(run) == specs.resolved(specs.load(job_file()))  # absolute paths: resumable anywhere


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_while_summaries_are_written_is_taken_after_them(signum):
    # what a grid and a search write once Tune has ended (test_grid sends Ctrl-C there through a real grid)
    import os
    import signal

    before, written = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}, []
    with pytest.raises(KeyboardInterrupt):
        with runs._summaries_first():
            os.kill(os.getpid(), getattr(signal, signum))
            written += ["first", "second"]
    assert written == ["first", "second"]
    assert {s: signal.getsignal(s) for s in before} == before


def test_ctrl_c_leaves_an_interrupted_summary_and_the_last_model(job_file):
    def ctrl_c_at_20(tick):  # the progress callback gets a tick every 10 steps, before that step's evaluation
        if tick["iteration"] == 20:
            raise KeyboardInterrupt

    spec = specs.load(job_file(), ["train.eval_every=5"])
    with pytest.raises(Interrupted, match="interrupted; the last evaluated model is in "):
        runs.local(spec, "cpu", quiet, progress=ctrl_c_at_20)
    run = job_file().parent / "runs" / "tiny"
    summary = rundir.read_summary(run)
    assert summary.status == "interrupted" and summary.iterations == 15  # the last checkpoint
    assert rundir.load_model(run)["iteration"] == 15


def test_a_failed_run_says_why_in_its_summary(job_file):
    spec = specs.load(job_file(), ["model.nonlinearity=relu", "train.lr=1.0e+6"])
    with pytest.raises(RunFailed, match="training diverged"):
        runs.local(spec, "cpu", quiet)
    summary = rundir.read_summary(job_file().parent / "runs" / "tiny")
    assert summary.status == "failed" and "diverged" in summary.error and summary.iterations == 0


def test_bad_input_found_before_training_leaves_no_directory(job_file, tmp_path):
    with pytest.raises(BadInput, match="no CUDA device"):
        runs.local(specs.load(job_file()), "cuda", quiet)
    assert not (tmp_path / "runs").exists()


def test_relative_paths_are_taken_from_rnnjob_home(job_file, tmp_path, monkeypatch, mnist_root):
    monkeypatch.setenv(specs.HOME_ENV, str(tmp_path / "home"))
    run, _ = runs.local(specs.load(job_file(), ["output.dir=relative"]), "cpu", quiet)
    assert run == str(tmp_path / "home" / "relative" / "tiny")


@pytest.mark.slow
def test_concurrent_runs_of_one_name_get_a_whole_directory_each(job_file, tmp_path):
    # four `rnnjob run` processes on two cores reach the naming at once (threads race it harder:
    # test_storage, for object stores)
    import subprocess

    from tests.helpers import RNNJOB, clean_env

    job = job_file("crowd", iters=1, eval_every=1)
    procs = [subprocess.Popen([RNNJOB, "run", str(job), "--device", "cpu"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=clean_env(OMP_NUM_THREADS="1"))
             for _ in range(4)]
    assert [p.wait(timeout=600) for p in procs] == [0] * 4, [p.stderr.read() for p in procs]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 4 and len({r.name for r in runs}) == 4
    for run in runs:
        assert rundir.read_summary(run).status == "completed" and rundir.load_model(run)["iteration"] == 1


# rnnjob resume, in this process (on Ray: test_ray_train; grids: test_grid; through the Jobs API: test_jobs_api)

@pytest.mark.slow
def test_model_c_stopped_with_ctrl_c_resumes_to_the_same_weights_bit_for_bit(tmp_path, mnist_root):
    from tests.helpers import JOBS, ctrl_c, rnnjob

    # model C's own network and recipe; evaluations every 200 steps leave Ctrl-C a second and more to land
    args = [JOBS / "model_c.yaml", "--iters", 400, "--device", "cpu", "--set", f"data.root={mnist_root}",
            "--set", "train.eval_every=200"]
    assert rnnjob("run", *args, "--out", tmp_path / "whole", timeout=600).returncode == 0
    done, _ = ctrl_c(["run", *args, "--out", tmp_path / "parts"], "Iteration: 200.")
    stopped = tmp_path / "parts" / "model_c"
    assert done.returncode == 130 and rundir.read_summary(stopped).status == "interrupted"
    assert rundir.load_model(stopped)["iteration"] == 200
    resumed = rnnjob("resume", stopped, "--device", "cpu", timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"run directory: {stopped}  (resuming at iteration 200, to 400 iterations)" in resumed.stdout
    whole = tmp_path / "whole" / "model_c"
    assert weights_equal(whole, stopped) and evaluations(whole) == evaluations(stopped)
    summary = rundir.read_summary(stopped)
    assert summary.status == "completed" and summary.iterations == 400
    assert [(r["iteration"], r["iters"]) for r in summary.resumes] == [(200, 400)]


def test_a_completed_run_trains_on_to_more_iterations_with_its_cosine_over_the_new_total(job_file):
    job = job_file("longer", text=None, iters=20, eval_every=10)
    first, _ = runs.local(specs.load(job, ["train.lr_decay=cosine"]), "cpu", quiet)
    location, (summary,) = runs.resume(first, quiet, iters=40)
    assert location == first and summary.iterations == 40 and rundir.load_model(first)["iteration"] == 40
    assert [m["iteration"] for m in rundir.read_metrics(first)] == [10, 20, 30, 40]  # each evaluation once
    assert summary.lr_schedule == "cosine over 40 iterations since the resume at iteration 20 (over 20 before it)"
    assert rundir.read_config(first).train.iters == 40


def test_a_completed_run_without_more_iterations_has_nothing_to_do(job_file):
    run, summary = runs.local(specs.load(job_file()), "cpu", quiet)
    said = []
    assert runs.resume(run, said.append) is None and "already completed 20 iterations" in said[0]
    assert rundir.read_summary(run) == summary


@pytest.mark.slow
def test_a_run_stops_at_the_first_evaluation_that_reaches_its_target_accuracy(job_file):
    job = job_file("tta", iters=100, eval_every=10)
    whole, _ = runs.local(specs.load(job), "cpu", quiet)
    history = rundir.read_metrics(whole)
    # a level the run passes for the first time at an evaluation after the second one
    k = next(i for i in range(2, len(history)) if history[i]["accuracy"] > max(h["accuracy"] for h in history[:i]))
    target = history[k]["accuracy"]
    run, summary = runs.local(specs.load(job, [f"train.target_accuracy={target}"]), "cpu", quiet)
    assert summary.status == "completed" and summary.iterations == history[k]["iteration"] < 100
    assert [m["accuracy"] for m in rundir.read_metrics(run)] == [m["accuracy"] for m in history[:k + 1]]
    reached = summary.reached_target
    assert summary.target_accuracy == target and reached["iteration"] == history[k]["iteration"]
    assert reached["train_seconds"] == summary.train_seconds > 0 and reached["elapsed_seconds"] > 0
    said = []
    assert runs.resume(run, said.append) is None and "reached its target accuracy" in said[0]
    # a target never reached: the run trains all its iterations and says so
    _, missed = runs.local(specs.load(job, ["train.target_accuracy=100", "train.iters=20"]), "cpu", quiet)
    assert missed.iterations == 20 and missed.target_accuracy == 100 and missed.reached_target is None


def test_resume_refuses_a_run_that_is_still_running(job_file):
    run, _ = runs.local(specs.load(job_file()), "cpu", quiet)
    before = snapshot(run)
    with rundir.lock(run):  # as the process training into it holds it
        with pytest.raises(BadInput, match="still running"):
            runs.resume(run, quiet, iters=40)
    assert snapshot(run) == before


def test_resume_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(BadInput, match="not a run directory .* nor a grid's"):
        runs.resume(str(tmp_path), quiet)
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_a_model_trained_with_another_spec(job_file):
    run, _ = runs.local(specs.load(job_file()), "cpu", quiet)
    spec = rundir.read_config(run)
    rundir.write_config(run, specs.from_dict({**spec.to_dict(), "model": {**spec.to_dict()["model"],
                                                                          "hidden_dim": 99}}))
    before = snapshot(run)
    with pytest.raises(BadInput, match="trained with another spec than its config.yaml"):
        runs.resume(run, quiet, iters=40)
    assert snapshot(run) == before


def test_resume_refuses_fewer_iterations_than_were_trained(job_file):
    run, _ = runs.local(specs.load(job_file()), "cpu", quiet)
    with pytest.raises(BadInput, match="--iters 10: .* has trained 20 iterations already"):
        runs.resume(run, quiet, iters=10)


def snapshot(run) -> dict:
    return {p.name: p.read_bytes() for p in Path(run).iterdir() if p.is_file()}
