"""Grids on Ray Tune: one trial per combination, each trial a TorchTrainer of N workers.

Train V2's pattern: a Tune function builds and fits the trial's TorchTrainer, and
Ray's TuneReportCallback passes every evaluation on to Tune (for ASHA). The Tune
function itself holds no CPU, so on a small machine the workers get them all.
"""

import math
from typing import Optional

from . import rayenv  # noqa: F401  (before ray: settings Ray reads at import)

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.integration.ray_train import TuneReportCallback  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402

from . import loop, ray_train, rundir, storage  # noqa: E402
from . import spec as specs  # noqa: E402


def _trial(config: dict) -> None:
    """What Tune runs for one trial: the trial's own TorchTrainer."""
    t = config["trial"]
    spec = specs.from_dict(t["spec"], t["name"])
    ray_train.trainer(spec, t["run"], t["started"], callbacks=[TuneReportCallback()]).fit()


def concurrency(grid: specs.Grid, asked: Optional[int]) -> int:
    """Trials at once: what the user asked for, at most what the cluster can hold side by side."""
    have = ray.cluster_resources()
    s = grid.trials[0].spec.scaling
    fits = int(have.get("CPU", 0) // (s.workers * ray_train.cpus_each(s)))
    if s.gpu:
        fits = min(fits, int(have.get("GPU", 0) // s.workers))
    wanted = asked or grid.tune.max_concurrent or len(grid.trials)
    return max(1, min(wanted, fits, len(grid.trials)))


def check(grid: specs.Grid) -> None:
    """Every trial must fit the cluster on its own, or Tune would wait for it forever.
    (Whether each trial's batch splits over its workers is checked before Ray starts.)"""
    for trial in grid.trials:
        ray_train.cluster_check(trial.spec)
        ray_train.storage_check(trial.spec)


def _scheduler(grid: specs.Grid):
    t = grid.tune
    if t.scheduler != "asha":
        return None
    # Tune's training_iteration counts reports, and each evaluation is one report
    evaluations = max(math.ceil(trial.spec.train.iters / trial.spec.train.eval_every) for trial in grid.trials)
    return ASHAScheduler(metric=t.metric, mode=t.mode, time_attr="training_iteration",
                         max_t=evaluations, grace_period=min(t.grace_period, evaluations))


def run(grid: specs.Grid, grid_dir: str, started: float, at_once: int) -> list[dict]:
    """Run every trial into `<grid_dir>/<trial name>/`; returns their summaries, failed and stopped ones too."""
    runs = {}
    for trial in grid.trials:
        runs[trial.name] = storage.join(grid_dir, trial.name)
        storage.make_new_dir(runs[trial.name])
        rundir.write_config(runs[trial.name], trial.spec)
    # trial functions run in folders of Ray's: no path may depend on the working folder
    space = [{"name": t.name, "spec": specs.anchor(t.spec).to_dict(),
              "run": storage.absolute(runs[t.name]), "started": started} for t in grid.trials]
    tuner = tune.Tuner(
        tune.with_resources(_trial, {"memory": 1}),  # no CPU for the Tune function: its workers need them
        param_space={"trial": tune.grid_search(space)},
        tune_config=tune.TuneConfig(max_concurrent_trials=at_once,
                                    scheduler=_scheduler(grid)),
        run_config=tune.RunConfig(name="tune", storage_path=storage.absolute(grid_dir), verbose=0,
                                  failure_config=tune.FailureConfig(fail_fast=False)),
    )
    trials = {t.name: t for t in grid.trials}
    summaries = []
    for result in tuner.fit():
        name = result.config["trial"]["name"]
        summaries.append(_outcome(trials[name], runs[name], result, started))
    return summaries


def _outcome(trial: specs.Trial, run: str, result, started: float) -> dict:
    """A trial's summary: rank 0 wrote it if the trial finished; else it failed, or ASHA stopped it."""
    if rundir.has_summary(run):
        return rundir.read_summary(run)
    if result.error:
        status, error = "failed", str(result.error).strip().splitlines()[-1]
    else:
        status, error = "stopped", "stopped early by the asha scheduler"
    summary = loop.unfinished_summary(trial.spec, run, status, error, started)
    rundir.write_summary(run, summary)
    return summary
