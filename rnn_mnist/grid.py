"""Grids and searches on Ray Tune: one trial per combination (a grid) or per sampled configuration
(a search).

A single-worker trial trains in its Tune trial's own process: `loop.fit` with `TrialHooks`, which
report each evaluation and its checkpoint through `tune.report`. The Tuner reuses its trial actors
(`reuse_actors`), so a trial after the first finds torch imported and pays no process start; a
failed trial is retried from its last checkpoint (Tune's FailureConfig). A trial of several workers
is a Tune function that builds and fits a TorchTrainer, with Ray's TuneReportCallback passing its
evaluations on to Tune; that function holds no CPU, so the workers get them all.
A search's samples are not known before they run: each Tune function makes its own run
directories (one per seed with `repeat`), and reports their mean to Tune at the end.
"""

import contextlib
import json
import logging
import math
import os
import signal
import statistics
import tempfile
import threading
import time
from typing import Optional

import ray
import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from . import loop, ray_train, rundir, storage, sweep, telemetry, timeline
from . import spec as specs
from .kernels import process
from .model import param_count

EXPERIMENT = "tune"  # Tune's own files, below the grid's or search's directory


class TrialHooks(loop.Hooks):
    """The loop's view of a single-worker trial, in its Tune trial's own process."""

    def __init__(self, run: str, fault: Optional[ray_train.Fault], carry_on: bool, to_tune: bool):
        super().__init__()
        self.run, self.fault, self.carry_on, self.to_tune = run, fault, carry_on, to_tune

    def resume(self):
        checkpoint = tune.get_checkpoint() if self.to_tune and not self.carry_on else None
        if checkpoint is not None:  # this trial's own, reported before its process died
            self.carried_on = False
            with checkpoint.as_directory() as d:
                return rundir.load_model(d)
        if storage.exists(storage.join(self.run, rundir.MODEL)):
            # carry_on: a run that an earlier command ended (rnnjob resume); else this trial is retried and
            # its run directory holds its last checkpoint (a seed of a repeated sample reports none to Tune)
            self.carried_on = self.carry_on
            return rundir.load_model(self.run)
        return None

    def nodes(self):
        return [ray.get_runtime_context().get_node_id()]

    def after_step(self, iteration):
        ray_train.inject(self.fault, 0, self.run, iteration)

    def publishers(self, run):
        return [ray_train.RayMetrics(storage.basename(run), 0)]

    def report(self, record, state):
        if not self.to_tune:
            return
        with tempfile.TemporaryDirectory() as d:
            rundir.save_model(d, state)
            tune.report(record, checkpoint=tune.Checkpoint.from_directory(d))


def _fit_here(spec: specs.JobSpec, run: str, fault, carry_on: bool, to_tune: bool) -> None:
    """Train a single-worker trial in this process, with the CPUs (and GPU) Tune gave it."""
    if timeline.setting():
        timeline.mark("trial process started", timeline.process_started())
        timeline.mark("trial function entered")
    # Tune's report persists each checkpoint through Ray Train's storage code, which says so at INFO; the loop
    # prints the tutorial's line for each evaluation already
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    device = torch.device("cuda" if spec.scaling.gpu else "cpu")  # Ray made this trial's GPU the only one seen
    process.tune(device.type, threads=ray_train.cpus_each(spec.scaling))
    try:
        loop.fit(spec, device, run, TrialHooks(run, fault, carry_on, to_tune))
    except loop.Diverged as e:  # more attempts would diverge again: the trial ends with its reason
        storage.write_bytes(storage.join(run, rundir.FAILED), str(e).encode())


def _fit(spec: specs.JobSpec, run: str, fault, carry_on: bool, to_tune: bool) -> Optional[str]:
    """Train one trial's run (in this process, or as a TorchTrainer of several workers); returns why it
    failed, or None. carry_on: from the run directory's model.pt (rnnjob resume). to_tune: report each
    evaluation to Tune (its scheduler and search algorithm see them)."""
    if spec.scaling.workers == 1:
        _fit_here(spec, run, fault, carry_on, to_tune)
        return ray_train.failure(run)
    callbacks = [TuneReportCallback()] if to_tune else []
    try:
        ray_train.trainer(spec, run, fault, callbacks=callbacks, resume=carry_on).fit()
    except ray.train.TrainingFailedError as e:  # its workers failed more than max_failures times
        return str(e).strip().splitlines()[-1]
    return ray_train.failure(run)


def _resources(scaling: specs.ScalingSpec) -> tune.PlacementGroupFactory:
    """What a trial's Tune process holds: the trial's CPUs (and GPU) when it trains itself; nothing but
    a token of memory when a TorchTrainer's workers do (they need every CPU)."""
    if scaling.workers > 1:
        return tune.PlacementGroupFactory([{"CPU": 0, "GPU": 0, "memory": 1}])
    return tune.PlacementGroupFactory([{"CPU": ray_train.cpus_each(scaling), "GPU": 1 if scaling.gpu else 0}])


def _trial_resources(config: dict) -> tune.PlacementGroupFactory:
    return _resources(specs.ScalingSpec(**config["trial"]["spec"]["scaling"]))


def _trial(config: dict) -> None:
    """What Tune runs for one grid trial."""
    t = config["trial"]
    timeline.adopt(t["timeline"])  # started by a raylet: the driver's environment did not come with it
    spec = specs.from_dict(t["spec"], t["name"])
    # a resumed grid's Tune experiment is new: a checkpoint in it comes from this command's own retries
    carry_on = t["resume"] and (spec.scaling.workers > 1 or tune.get_checkpoint() is None)
    error = _fit(spec, t["run"], t["fault"], carry_on, to_tune=True)
    if error and not ray_train.failure(t["run"]):
        storage.write_bytes(storage.join(t["run"], rundir.FAILED), error.encode())


def _max_failures(job_specs) -> int:
    """Retries of a failed single-worker trial, for Tune's FailureConfig (one for the whole experiment:
    the largest scaling.max_failures among them). A TorchTrainer retries its own workers."""
    return max((s.scaling.max_failures for s in job_specs if s.scaling.workers == 1), default=0)


def _tuner(trainable, param_space: dict, config: tune.TuneConfig, name: str, folder: str,
           max_failures: int) -> tune.Tuner:
    """The Tuner of a grid or a search: Tune's files in <folder>/<name>, no trial's failure ending the others."""
    # Tune's own settings (its SIGINT handler off, its console output, its warnings): rayenv.configure
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=config,
        run_config=tune.RunConfig(name=name, storage_path=storage.for_ray(folder), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))


@contextlib.contextmanager
def _stops_gracefully():
    """Ctrl-C or SIGTERM while Tune runs: the first has Tune end its trials and save its experiment's state
    (SIGUSR1, Tune's signal for a graceful stop), then raises KeyboardInterrupt once Tuner.fit has returned,
    so that no trial writes into its run directory after the caller's summaries; a second one interrupts at
    once. Tune's own SIGINT handler is off: after it, nothing tells an interrupted experiment from a finished
    one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked = threading.Event()

    def stop(signum, frame):
        if asked.is_set() or not callable(signal.getsignal(signal.SIGUSR1)):  # twice, or before Tune listens
            raise KeyboardInterrupt
        asked.set()
        os.kill(os.getpid(), signal.SIGUSR1)

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    tune_log = logging.getLogger("ray.tune.tune")  # its "interrupted ... Tuner.restore(...)": rnnjob says resume
    level = tune_log.level
    tune_log.setLevel(logging.ERROR)
    for s in saved:
        signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        tune_log.setLevel(level)
    if asked.is_set():
        raise KeyboardInterrupt


def concurrency(grid: sweep.Grid, asked: Optional[int]) -> int:
    """Trials at once: what the user asked for, at most what the cluster can hold side by side."""
    return at_once(grid.trials[0].spec.scaling, len(grid.trials), asked or grid.tune.max_concurrent)


def at_once(s: specs.ScalingSpec, trials: int, asked: Optional[int]) -> int:
    """Trials of this scaling at once: `asked` (or all), at most what the cluster holds side by side."""
    have = ray.cluster_resources()
    fits = int(have.get("CPU", 0) // (s.workers * ray_train.cpus_each(s)))
    if s.gpu:
        fits = min(fits, int(have.get("GPU", 0) // s.workers))
    return max(1, min(asked or trials, fits, trials))


def _scheduler(t: sweep.TuneSpec, job_specs):
    if t.scheduler != "asha":
        return None
    # Tune's training_iteration counts reports, and each evaluation is one report
    evaluations = max(math.ceil(spec.train.iters / spec.train.eval_every) for spec in job_specs)
    return ASHAScheduler(metric=t.metric, mode=t.mode, time_attr="training_iteration",
                         max_t=evaluations, grace_period=min(t.grace_period, evaluations))


def work(spec: specs.JobSpec) -> float:
    """A trial's training, roughly: each parameter is used once per sample and step, so its parameters times
    the samples per worker times the steps. Only its order matters."""
    m = spec.model
    return param_count(m.cell, m.hidden_dim, m.layer_dim) * spec.train.batch_size / spec.scaling.workers \
        * spec.train.iters


def run(grid: sweep.Grid, grid_dir: str, runs: dict, at_once: int, resume: bool = False,
        fault: Optional[ray_train.Fault] = None) -> dict:
    """Run every trial into its run directory (runs: trial name -> directory below grid_dir, made
    already); Tune's own files go to <grid_dir>/tune. Ctrl-C: KeyboardInterrupt once Tune has ended
    every trial. Returns trial name -> (status, error): completed, failed, or stopped early by ASHA.

    Tune starts trials in the order given: the longest first (by `work`), so that the short ones fill
    the slots at the end instead of a long one running alone while the others wait."""
    trials = sorted(grid.trials, key=lambda t: -work(t.spec))  # stable: the grid's order among equals
    space = [{"name": t.name, "spec": t.spec.to_dict(), "run": runs[t.name], "resume": resume, "fault": fault,
              "timeline": timeline.setting()} for t in trials]
    job_specs = [t.spec for t in grid.trials]
    config = tune.TuneConfig(max_concurrent_trials=at_once, scheduler=_scheduler(grid.tune, job_specs),
                             reuse_actors=True)
    # a resumed grid's Tune experiment is a new one beside the first: Tune's own restore would rerun
    # its finished trials' functions, and our trials carry on from their run directories anyway
    name = time.strftime("tune-resumed-%Y%m%d-%H%M%S") if resume else EXPERIMENT
    tuner = _tuner(tune.with_resources(_trial, _trial_resources), {"trial": tune.grid_search(space)}, config,
                   name, grid_dir, _max_failures(job_specs))
    with _stops_gracefully():
        results = tuner.fit()
    trial_specs = {t.name: t.spec for t in grid.trials}
    outcomes = {}
    for result in results:
        name = result.config["trial"]["name"]
        if result.error:
            outcomes[name] = (rundir.Status.FAILED, str(result.error).strip().splitlines()[-1])
        elif ray_train.failure(runs[name]):
            outcomes[name] = (rundir.Status.FAILED, ray_train.failure(runs[name]))
        elif not rundir.finished(runs[name], trial_specs[name]):
            outcomes[name] = (rundir.Status.STOPPED, "stopped early by the asha scheduler")
        else:
            outcomes[name] = (rundir.Status.COMPLETED, None)
    return outcomes


def _seed_runs(search: sweep.Search, values: dict, search_dir: str, name: str) -> list:
    """(spec, run directory) of each seed of one sample. A directory there already is this sample's own, from
    an attempt before this one (Tune's trial ids are unique within a search): it is carried on."""
    folder = storage.join(search_dir, name)
    storage.make_new_dir(folder)
    if search.repeat == 1:
        return [(search.sample(values, name), folder)]
    storage.write_bytes(storage.join(folder, rundir.VALUES), json.dumps(values).encode())
    plan = []
    for k in range(search.repeat):
        spec = search.sample(values, name, k)
        run = storage.join(folder, f"seed={spec.train.seed}")
        storage.make_new_dir(run)
        plan.append((spec, run))
    return plan


def _run_seed(spec: specs.JobSpec, run: str, values: dict, fault, to_tune: bool) -> rundir.Summary:
    """Train one seed of a sample into its run directory, or carry it on; its summary."""
    if rundir.has_summary(run) and rundir.read_summary(run).status == rundir.Status.COMPLETED:
        if to_tune:  # Tune's record of the experiment predates its end: Tune and the search algorithm need it
            tune.report(rundir.read_metrics(run)[-1])
        return rundir.read_summary(run)
    carry_on = rundir.has_summary(run)  # ended by an earlier command (interrupted, failed): rnnjob resume
    rundir.clear_outcome(run)
    with rundir.lock(run):
        rundir.write_config(run, spec)
        storage.write_bytes(storage.join(run, rundir.VALUES), json.dumps(values).encode())
        started = time.time()
        error = _fit(spec, run, fault, carry_on, to_tune)
        summary = rundir.finish(run, spec, rundir.Status.FAILED if error else rundir.Status.COMPLETED, started, error)
        telemetry.write_hparams(run, {**values, "train.seed": spec.train.seed}, summary.final_accuracy,
                                summary.best_accuracy)
    return summary


def _sample(config: dict, search: sweep.Search, search_dir: str, timeline_file: Optional[str], fault) -> None:
    """What Tune runs for one sample of a search: its runs, one per seed, one after another (several
    only with `repeat`). One seed: every evaluation goes to Tune as it comes (ASHA, the search algorithm).
    Several: their mean (and standard deviation) goes to Tune once all have run."""
    timeline.adopt(timeline_file)
    values = config["values"]
    name = f"sample-{tune.get_context().get_trial_id()}"  # Tune's id: 7a3c1_00003 (random), 4e35a8da (optuna)
    summaries = [_run_seed(spec, run, values, fault, to_tune=search.repeat == 1)
                 for spec, run in _seed_runs(search, values, search_dir, name)]
    if search.repeat > 1:
        metric = search.tune.metric
        got = [s.metric(metric) for s in summaries if s.status == rundir.Status.COMPLETED]
        if not got:
            raise RuntimeError(f"every seed of {name} failed; {summaries[0].error}")
        tune.report({metric: statistics.fmean(got), f"{metric}_std": statistics.pstdev(got), "seeds": len(got)})


def _domain(kind: str, args: tuple):
    return {"choice": lambda: tune.choice(list(args)), "uniform": lambda: tune.uniform(*args),
            "loguniform": lambda: tune.loguniform(*args), "randint": lambda: tune.randint(*args)}[kind]()


def _search_trainable(search: sweep.Search, search_dir: str, fault):
    base = search.sample({}, "base")
    trainable = tune.with_parameters(_sample, search=search, search_dir=search_dir,
                                     timeline_file=timeline.setting(), fault=fault)
    return tune.with_resources(trainable, _resources(base.scaling)), base


def run_search(search: sweep.Search, search_dir: str, at_once: int, fault: Optional[ray_train.Fault] = None) -> None:
    """Run a search's samples into search_dir (each makes its own directories); Tune's files go to
    <search_dir>/tune. The caller settles the samples Tune stopped (ASHA) or that Ctrl-C ended."""
    t = search.tune
    trainable, base = _search_trainable(search, search_dir, fault)
    if search.search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not its "A new study created" line
        algorithm = OptunaSearch(metric=t.metric, mode=t.mode, seed=base.train.seed)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # the same draws for the same seed; Tune applies max_concurrent_trials to a Searcher (OptunaSearch) but
        # ignores it for a generator given as the search algorithm, which takes its own
        algorithm = BasicVariantGenerator(random_state=base.train.seed, max_concurrent=at_once)
    config = tune.TuneConfig(num_samples=search.search.num_samples, search_alg=algorithm,
                             max_concurrent_trials=None if search.search.algorithm == "random" else at_once,
                             scheduler=_scheduler(t, [base]), reuse_actors=True)
    space = {"values": {key: _domain(kind, args) for key, kind, args in search.space}}
    tuner = _tuner(trainable, space, config, EXPERIMENT, search_dir, _max_failures([base]))
    with _stops_gracefully():
        tuner.fit()


def _experiment(search_dir: str) -> str:
    """Where Tune's record of a search's experiment is, as Tune is handed it."""
    return storage.for_ray(storage.join(search_dir, EXPERIMENT))


def can_resume_search(search_dir: str) -> bool:
    """Whether Tune's record of a search's experiment is there to carry it on."""
    return tune.Tuner.can_restore(_experiment(search_dir))


def resume_search(search: sweep.Search, search_dir: str, fault: Optional[ray_train.Fault] = None) -> None:
    """Carry a search on where its Tune experiment stopped (Tune's Tuner.restore): its unfinished samples from
    their run directories, then the samples it had still to draw, drawn by its search algorithm as it was."""
    trainable, _ = _search_trainable(search, search_dir, fault)
    tuner = tune.Tuner.restore(_experiment(search_dir), trainable, resume_unfinished=True, resume_errored=True)
    with _stops_gracefully():
        tuner.fit()
