"""Grids on Ray Tune: one trial per combination, each trial a TorchTrainer of N workers.

Train V2's pattern: a Tune function builds and fits the trial's TorchTrainer, and
Ray's TuneReportCallback passes every evaluation on to Tune (for ASHA). The Tune
function itself holds no CPU, so on a small machine the workers get them all.
"""

import math
import os
import time
from typing import Optional

from . import rayenv  # noqa: F401  (before ray: settings Ray reads at import)

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.integration.ray_train import TuneReportCallback  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402

from . import ray_train, rundir, timeline  # noqa: E402
from . import spec as specs  # noqa: E402


def _trial(config: dict) -> None:
    """What Tune runs for one trial: the trial's own TorchTrainer."""
    t = config["trial"]
    timeline.adopt(t["timeline"])  # started by a raylet: the driver's environment did not come with it
    spec = specs.from_dict(t["spec"], t["name"])
    ray_train.trainer(spec, t["run"], callbacks=[TuneReportCallback()], resume=t["resume"]).fit()


def concurrency(grid: specs.Grid, asked: Optional[int]) -> int:
    """Trials at once: what the user asked for, at most what the cluster can hold side by side."""
    have = ray.cluster_resources()
    s = grid.trials[0].spec.scaling
    fits = int(have.get("CPU", 0) // (s.workers * ray_train.cpus_each(s)))
    if s.gpu:
        fits = min(fits, int(have.get("GPU", 0) // s.workers))
    wanted = asked or grid.tune.max_concurrent or len(grid.trials)
    return max(1, min(wanted, fits, len(grid.trials)))


def _scheduler(grid: specs.Grid):
    t = grid.tune
    if t.scheduler != "asha":
        return None
    # Tune's training_iteration counts reports, and each evaluation is one report
    evaluations = max(math.ceil(trial.spec.train.iters / trial.spec.train.eval_every) for trial in grid.trials)
    return ASHAScheduler(metric=t.metric, mode=t.mode, time_attr="training_iteration",
                         max_t=evaluations, grace_period=min(t.grace_period, evaluations))


def run(grid: specs.Grid, grid_dir: str, runs: dict, at_once: int, resume: bool = False) -> dict:
    """Run every trial into its run directory (runs: trial name -> directory below grid_dir, made
    already); Tune's own files go to <grid_dir>/tune.
    Returns trial name -> (status, error): completed, failed, or stopped early by ASHA."""
    space = [{"name": t.name, "spec": t.spec.to_dict(), "run": runs[t.name], "resume": resume,
              "timeline": timeline.setting()} for t in grid.trials]
    # Ctrl-C is the caller's to handle (every unfinished trial is then `interrupted`), not Tune's: its own
    # handler ends the experiment quietly, and its trials would read as stopped early
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    tuner = tune.Tuner(
        tune.with_resources(_trial, {"memory": 1}),  # no CPU for the Tune function: its workers need them
        param_space={"trial": tune.grid_search(space)},
        tune_config=tune.TuneConfig(max_concurrent_trials=at_once, scheduler=_scheduler(grid)),
        # a resumed grid's Tune experiment is a new one beside the first: Tune's own restore would rerun
        # its finished trials' functions, and our trials carry on from their run directories anyway
        run_config=tune.RunConfig(name=time.strftime("tune-resumed-%Y%m%d-%H%M%S") if resume else "tune",
                                  storage_path=grid_dir, verbose=0,
                                  failure_config=tune.FailureConfig(fail_fast=False)),
    )
    iters = {t.name: t.spec.train.iters for t in grid.trials}
    outcomes = {}
    for result in tuner.fit():
        name = result.config["trial"]["name"]
        if result.error:
            outcomes[name] = ("failed", str(result.error).strip().splitlines()[-1])
        elif ray_train.failure(runs[name]):
            outcomes[name] = ("failed", ray_train.failure(runs[name]))
        elif rundir.last_iteration(runs[name]) < iters[name]:
            outcomes[name] = ("stopped", "stopped early by the asha scheduler")
        else:
            outcomes[name] = ("completed", None)
    return outcomes

