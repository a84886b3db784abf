"""Grids and searches on Ray Tune: one trial per combination (a grid) or per sampled configuration
(a search), each trial a TorchTrainer of N workers.

Train V2's pattern: a Tune function builds and fits the trial's TorchTrainer, and
Ray's TuneReportCallback passes every evaluation on to Tune (for ASHA, and for a search
algorithm). The Tune function itself holds no CPU, so on a small machine the workers get them all.
A search's samples are not known before they run: each Tune function makes its own run
directories (one per seed with `repeat`), and reports their mean to Tune at the end.
"""

import json
import math
import os
import statistics
import time
from typing import Optional

from . import rayenv  # noqa: F401  (before ray: settings Ray reads at import)

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.integration.ray_train import TuneReportCallback  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402

from . import ray_train, rundir, storage, telemetry, timeline  # noqa: E402
from . import spec as specs  # noqa: E402


def _trial(config: dict) -> None:
    """What Tune runs for one trial: the trial's own TorchTrainer."""
    t = config["trial"]
    timeline.adopt(t["timeline"])  # started by a raylet: the driver's environment did not come with it
    spec = specs.from_dict(t["spec"], t["name"])
    ray_train.trainer(spec, t["run"], callbacks=[TuneReportCallback()], resume=t["resume"]).fit()


def _tuner(trainable, param_space: dict, config: tune.TuneConfig, name: str, folder: str) -> tune.Tuner:
    """The Tuner of a grid or a search: Tune's files in <folder>/<name>, no trial's failure ending the others."""
    # Ctrl-C is the caller's to handle (every unfinished trial is then `interrupted`), not Tune's: its own
    # handler ends the experiment quietly, and its trials would read as stopped early
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # Tune's newer console output prints its experiment box and a TensorBoard hint into Ray's session
    # folder even at verbose=0; rnnjob prints its own directory and table, and writes TensorBoard files
    # into the run directories
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return tune.Tuner(
        tune.with_resources(trainable, {"memory": 1}),  # no CPU for the Tune function: its workers need them
        param_space=param_space, tune_config=config,
        run_config=tune.RunConfig(name=name, storage_path=folder, verbose=0,
                                  failure_config=tune.FailureConfig(fail_fast=False)))


def concurrency(grid: specs.Grid, asked: Optional[int]) -> int:
    """Trials at once: what the user asked for, at most what the cluster can hold side by side."""
    return at_once(grid.trials[0].spec.scaling, len(grid.trials), asked or grid.tune.max_concurrent)


def at_once(s: specs.ScalingSpec, trials: int, asked: Optional[int]) -> int:
    """Trials of this scaling at once: `asked` (or all), at most what the cluster holds side by side."""
    have = ray.cluster_resources()
    fits = int(have.get("CPU", 0) // (s.workers * ray_train.cpus_each(s)))
    if s.gpu:
        fits = min(fits, int(have.get("GPU", 0) // s.workers))
    return max(1, min(asked or trials, fits, trials))


def _scheduler(t: specs.TuneSpec, job_specs):
    if t.scheduler != "asha":
        return None
    # Tune's training_iteration counts reports, and each evaluation is one report
    evaluations = max(math.ceil(spec.train.iters / spec.train.eval_every) for spec in job_specs)
    return ASHAScheduler(metric=t.metric, mode=t.mode, time_attr="training_iteration",
                         max_t=evaluations, grace_period=min(t.grace_period, evaluations))


def run(grid: specs.Grid, grid_dir: str, runs: dict, at_once: int, resume: bool = False) -> dict:
    """Run every trial into its run directory (runs: trial name -> directory below grid_dir, made
    already); Tune's own files go to <grid_dir>/tune.
    Returns trial name -> (status, error): completed, failed, or stopped early by ASHA."""
    space = [{"name": t.name, "spec": t.spec.to_dict(), "run": runs[t.name], "resume": resume,
              "timeline": timeline.setting()} for t in grid.trials]
    config = tune.TuneConfig(max_concurrent_trials=at_once,
                             scheduler=_scheduler(grid.tune, [t.spec for t in grid.trials]))
    # a resumed grid's Tune experiment is a new one beside the first: Tune's own restore would rerun
    # its finished trials' functions, and our trials carry on from their run directories anyway
    name = time.strftime("tune-resumed-%Y%m%d-%H%M%S") if resume else "tune"
    tuner = _tuner(_trial, {"trial": tune.grid_search(space)}, config, name, grid_dir)
    trial_specs = {t.name: t.spec for t in grid.trials}
    outcomes = {}
    for result in tuner.fit():
        name = result.config["trial"]["name"]
        if result.error:
            outcomes[name] = ("failed", str(result.error).strip().splitlines()[-1])
        elif ray_train.failure(runs[name]):
            outcomes[name] = ("failed", ray_train.failure(runs[name]))
        elif not rundir.finished(runs[name], trial_specs[name]):
            outcomes[name] = ("stopped", "stopped early by the asha scheduler")
        else:
            outcomes[name] = ("completed", None)
    return outcomes



SUMMARY_KEY = {"accuracy": "final_accuracy", "loss": "final_loss", "val_accuracy": "final_val_accuracy"}
VALUES = "values.json"  # in a sample's directory: what the search drew for it


def _sample(config: dict, search: specs.Search, search_dir: str, timeline_file: Optional[str]) -> None:
    """What Tune runs for one sample of a search: its runs, one per seed, one after another (several
    only with `repeat`). One seed: every evaluation goes to Tune as it comes (ASHA, the search algorithm).
    Several: their mean (and standard deviation) goes to Tune once all have run."""
    timeline.adopt(timeline_file)
    values = config["values"]
    name = f"sample-{tune.get_context().get_trial_id()}"  # Tune's id: 7a3c1_00003 (random), 4e35a8da (optuna)
    if search.repeat == 1:
        plan = [(search.sample(values, name), rundir.create(search_dir, name))]
    else:
        folder = rundir.create(search_dir, name)
        specs_k = [search.sample(values, name, k) for k in range(search.repeat)]
        plan = [(s, rundir.create(folder, f"seed={s.train.seed}")) for s in specs_k]
        storage.write_bytes(storage.join(folder, VALUES), json.dumps(values).encode())
    summaries = []
    for spec, run in plan:
        with rundir.lock(run):
            rundir.write_config(run, spec)
            storage.write_bytes(storage.join(run, VALUES), json.dumps(values).encode())
            started = time.time()
            callbacks = [TuneReportCallback()] if search.repeat == 1 else []
            try:
                ray_train.trainer(spec, run, callbacks=callbacks).fit()
                error = ray_train.failure(run)
            except ray.train.TrainingFailedError as e:
                error = str(e).strip().splitlines()[-1]
            summary = rundir.finish(run, spec, "failed" if error else "completed", started, error)
            telemetry.write_hparams(run, {**values, "train.seed": spec.train.seed}, summary)
            summaries.append(summary)
    if search.repeat > 1:
        metric = search.tune.metric
        got = [s[SUMMARY_KEY[metric]] for s in summaries if s["status"] == "completed"]
        if not got:
            raise RuntimeError(f"every seed of {name} failed; {summaries[0].get('error')}")
        tune.report({metric: statistics.fmean(got), f"{metric}_std": statistics.pstdev(got), "seeds": len(got)})


def _domain(kind: str, args: tuple):
    return {"choice": lambda: tune.choice(list(args)), "uniform": lambda: tune.uniform(*args),
            "loguniform": lambda: tune.loguniform(*args), "randint": lambda: tune.randint(*args)}[kind]()


def run_search(search: specs.Search, search_dir: str, at_once: int) -> None:
    """Run a search's samples into search_dir (each makes its own directories); Tune's files go to
    <search_dir>/tune. The caller settles the samples Tune stopped (ASHA) or that Ctrl-C ended."""
    t, base = search.tune, search.sample({}, "base")
    if search.search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not its "A new study created" line
        algorithm = OptunaSearch(metric=t.metric, mode=t.mode, seed=base.train.seed)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        algorithm = BasicVariantGenerator(random_state=base.train.seed)  # the same draws for the same seed
    trainable = tune.with_parameters(_sample, search=search, search_dir=search_dir,
                                     timeline_file=timeline.setting())
    config = tune.TuneConfig(num_samples=search.search.num_samples, search_alg=algorithm,
                             max_concurrent_trials=at_once, scheduler=_scheduler(t, [base]))
    space = {"values": {key: _domain(kind, args) for key, kind, args in search.space}}
    _tuner(trainable, space, config, "tune", search_dir).fit()
