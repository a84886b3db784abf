"""A run's life, wherever it trains: one owner for `rnnjob run`, `rnnjob submit` and grids.

Each entry point does, in order: the checks that need no run directory (bad input leaves nothing
behind), the run directory and its config.yaml, the training, and summary.json on every outcome
(completed, failed, interrupted, stopped) through `rundir.finish`. Paths are resolved once, here
(`spec.resolved`). Ray is imported only by the functions that use it.
"""

import contextlib
import time
from typing import Callable, Optional

from . import data, loop, rundir, storage
from . import spec as specs
from .errors import BadInput, Interrupted, RunFailed
from .kernels import process

Echo = Callable[[str], None]


@contextlib.contextmanager
def outcome(run: str, spec: specs.JobSpec, started: float, device: Optional[str] = None):
    """summary.json for whatever happens inside: completed, failed (RunFailed) or interrupted (Ctrl-C)."""
    try:
        yield
    except RunFailed as e:
        rundir.finish(run, spec, "failed", started, str(e), device)
        raise
    except KeyboardInterrupt:
        rundir.finish(run, spec, "interrupted", started, "interrupted by the user", device)
        raise Interrupted(f"interrupted; the last evaluated model is in {run}") from None
    rundir.finish(run, spec, "completed", started, device=device)


def local(spec: specs.JobSpec, device_name: str, echo: Echo, progress=None,
          started: Optional[float] = None) -> tuple[str, dict]:
    """Train in this process (no Ray). Returns (run directory, summary)."""
    started = started or time.time()
    spec = specs.resolved(spec)
    device = loop.resolve_device(device_name)
    data.fetch(spec.data.root, log=echo)
    run = rundir.create(spec.output.location, spec.name)
    rundir.write_config(run, spec)
    m = spec.model
    echo(f"run directory: {run}  (model {m.cell}/{m.nonlinearity}, {m.layer_dim} layer(s), device {device.type})")
    with outcome(run, spec, started, device.type):
        process.tune(device.type)
        loop.fit(spec, device, run, progress=progress)
    return run, rundir.read_summary(run)


def on_ray(spec: specs.JobSpec, echo: Echo, started: Optional[float] = None) -> tuple[str, dict]:
    """Train as one Ray Train job on the cluster in $RAY_ADDRESS, or on an embedded Ray."""
    from . import ray_train  # Ray takes seconds to import: only the commands that use it pay

    started = started or time.time()
    spec = specs.resolved(spec)
    ray_train.check_batch(spec)
    fault = ray_train.Fault.from_env()
    data.fetch(spec.data.root, log=echo)
    with ray_train.session(echo):
        spec = ray_train.with_cpus(spec)
        ray_train.check_fits(spec)
        run = rundir.create(spec.output.location, spec.name)
        rundir.write_config(run, spec)
        s = spec.scaling
        echo(f"run directory: {run}  ({s.workers} worker(s) of {s.cpus_per_worker} CPU(s)"
             f"{' and 1 GPU' if s.gpu else ''})")
        with outcome(run, spec, started):
            ray_train.fit(spec, run, fault)
    return run, rundir.read_summary(run)


def grid(grid: specs.Grid, echo: Echo, max_concurrent: Optional[int] = None,
         started: Optional[float] = None) -> tuple[str, list[dict]]:
    """Every trial of a grid on Ray Tune, each into `<grid dir>/<trial name>/`. Returns
    (grid directory, every trial's summary: completed, failed, stopped early or interrupted)."""
    from . import ray_train

    started = started or time.time()
    grid = specs.resolved(grid)
    for trial in grid.trials:
        ray_train.check_batch(trial.spec)
        data.fetch(trial.spec.data.root, log=echo)
    with ray_train.session(echo):
        from . import grid as grids

        for trial in grid.trials:
            ray_train.check_fits(trial.spec)
        grid_dir = rundir.create(grid.output_dir, grid.name)
        runs = {t.name: rundir.create(grid_dir, t.name) for t in grid.trials}
        for trial in grid.trials:
            rundir.write_config(runs[trial.name], trial.spec)
        at_once = grids.concurrency(grid, max_concurrent)
        echo(f"grid directory: {grid_dir}  ({len(grid.trials)} trials, {at_once} at a time)")
        outcomes, interrupted = {}, False
        try:
            outcomes = grids.run(grid, grid_dir, runs, at_once)
        except KeyboardInterrupt:
            interrupted = True
        summaries = []
        for trial in grid.trials:
            run = runs[trial.name]
            finished = rundir.last_iteration(run) == trial.spec.train.iters
            status, error = outcomes.get(trial.name) or (
                ("completed", None) if finished else ("interrupted", "interrupted by the user"))
            summaries.append(rundir.finish(run, trial.spec, status, started, error))
    if interrupted:
        raise Interrupted(f"interrupted; the trials' last evaluated models are in {grid_dir}")
    return grid_dir, summaries


def evaluate(location: str, device_name: str) -> tuple[int, float]:
    """A saved model's (iteration, test accuracy in %): a run directory or its model.pt, path or URI."""
    if not storage.exists(location):
        raise BadInput(f"{location}: no such run directory or model file")
    try:
        state = rundir.load_model(location)
    except Exception as e:  # a file that is not ours, or damaged: say so instead of a traceback
        raise BadInput(f"{location}: cannot load: {str(e).splitlines()[0]}") from None
    spec = specs.resolved(specs.from_dict(state["spec"], location))
    device = loop.resolve_device(device_name)
    model = loop.build_model(spec, device.type)
    model.load_state_dict(state["model"])
    images, labels = data.load(spec.data.root, train=False)
    correct = loop.evaluate(model.to(device), images, labels, device).item()
    return state["iteration"], 100.0 * correct / len(labels)
