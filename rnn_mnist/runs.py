"""A run's life, wherever it trains: one owner for `rnnjob run`, `submit`, grids and `resume`.

Each entry point does, in order: the checks that need no run directory (bad input leaves nothing
behind), the run directory (locked while this process trains into it) and its config.yaml, the
training, and summary.json on every outcome (completed, failed, interrupted, stopped) through
`rundir.finish`, after one pre-flight (`_preflight`, `_on_ray`). Paths are resolved once, here
(`sweep.resolved`). Ray, and torch with the training loop, are imported only by the functions that
use them.
"""

import contextlib
import dataclasses
import json
import signal
import threading
import time
from typing import Callable, Optional

from . import data, rayenv, rundir, storage, sweep, telemetry, timeline
from . import spec as specs
from .errors import BadInput, Interrupted, RunFailed

Echo = Callable[[str], None]


def _ray_train():
    """The Ray Train room, imported only by the commands that use Ray (Ray takes seconds to import), after
    rnnjob's Ray settings, some of which Ray reads as it is imported."""
    rayenv.configure()
    from . import ray_train

    return ray_train


def _loop():
    """The training loop's room, and torch with it (two seconds to import): imported by the commands that
    train or evaluate, so that the ones that only read records or talk to a cluster start without it."""
    from . import loop

    return loop


def _grids():
    rayenv.configure()
    from . import grid

    return grid


def _preflight(job_specs, echo: Echo, on_ray: bool, creates: bool = True) -> None:
    """What every path that starts training checks and readies first, before it starts Ray or makes anything
    (bad input leaves nothing behind): where the runs go (creates: a new directory is to be made there), the
    batch split over the workers and the fault setting (on Ray), then MNIST made present, each data folder
    once."""
    ray_train = _ray_train() if on_ray else None
    if on_ray:
        ray_train.Fault.from_env()
    for spec in job_specs:
        if creates:
            rundir.check_place(spec.output.location)
        if on_ray:
            ray_train.check_batch(spec)
    for root in dict.fromkeys(spec.data.root for spec in job_specs):
        data.fetch(root, log=echo)


@contextlib.contextmanager
def _on_ray(job_specs, echo: Echo, alone: bool):
    """Ray for one command (rnnjob's settings, the cluster joined or an embedded Ray started), then what the
    cluster must hold: yields (ray_train, the specs as they will run). alone: one job on the cluster, whose
    workers share its CPUs (scaling.cpus_per_worker settled); else a grid's or search's trials, one CPU each
    unless they say more."""
    ray_train = _ray_train()
    with ray_train.session(echo):
        placed = [ray_train.with_cpus(spec) if alone else spec for spec in job_specs]
        for spec in placed:
            ray_train.check_fits(spec)
        yield ray_train, placed


@contextlib.contextmanager
def outcome(run: str, spec: specs.JobSpec, started: float, device: Optional[str] = None):
    """summary.json for whatever happens inside: completed, failed (RunFailed) or interrupted (Ctrl-C)."""
    try:
        yield
    except RunFailed as e:
        rundir.finish(run, spec, rundir.Status.FAILED, started, str(e), device)
        raise
    except KeyboardInterrupt:
        rundir.finish(run, spec, rundir.Status.INTERRUPTED, started, "interrupted by the user", device)
        raise Interrupted(f"interrupted; the last evaluated model is in {run}") from None
    rundir.finish(run, spec, rundir.Status.COMPLETED, started, device=device)
    timeline.mark("summary written")


def _train_here(run, spec, device, started, progress, saved=None) -> rundir.Summary:
    from .kernels import process

    loop = _loop()
    with outcome(run, spec, started, device.type):
        process.tune(device.type)
        loop.fit(spec, device, run, loop.Hooks(saved), publishers=[telemetry.Callback(progress)] if progress else [])
    return rundir.read_summary(run)


def _train_on_ray(ray_train, run, spec, started, progress, resume=False) -> rundir.Summary:
    following = telemetry.following(run, progress) if progress else contextlib.nullcontext()
    with outcome(run, spec, started), following:
        ray_train.fit(spec, run, ray_train.Fault.from_env(), resume)
    return rundir.read_summary(run)


def local(spec: specs.JobSpec, device_name: str, echo: Echo, progress=None,
          started: Optional[float] = None) -> tuple[str, rundir.Summary]:
    """Train in this process (no Ray). progress: called with a tick (iteration, loss, ...) every few
    steps. Returns (run directory, summary)."""
    started = started or time.time()
    spec = specs.resolved(spec)
    device = _loop().resolve_device(device_name)
    _preflight([spec], echo, on_ray=False)
    run = rundir.create(spec.output.location, spec.name)
    with rundir.lock(run):
        rundir.write_config(run, spec)
        m = spec.model
        echo(f"run directory: {run}  ({spec.train.iters} iterations, model {m.cell}/{m.nonlinearity}, "
             f"{m.layer_dim} layer(s), device {device.type})")
        return run, _train_here(run, spec, device, started, progress)


def on_ray(spec: specs.JobSpec, echo: Echo, progress=None,
           started: Optional[float] = None) -> tuple[str, rundir.Summary]:
    """Train as one Ray Train job on the cluster in $RAY_ADDRESS, or on an embedded Ray. progress: called
    with the workers' progress.json whenever it changes."""
    started = started or time.time()
    spec = specs.resolved(spec)
    _preflight([spec], echo, on_ray=True)
    with _on_ray([spec], echo, alone=True) as (ray_train, (spec,)):
        run = rundir.create(spec.output.location, spec.name)
        rundir.write_submission(spec.output.location, run)
        with rundir.lock(run):
            rundir.write_config(run, spec)
            s = spec.scaling
            echo(f"run directory: {run}  ({spec.train.iters} iterations, {s.workers} worker(s) of "
                 f"{s.cpus_per_worker} CPU(s){' and 1 GPU' if s.gpu else ''})")
            return run, _train_on_ray(ray_train, run, spec, started, progress)


def grid(grid: sweep.Grid, echo: Echo, max_concurrent: Optional[int] = None,
         started: Optional[float] = None) -> tuple[str, list[rundir.Summary]]:
    """Every trial of a grid on Ray Tune, each into `<grid dir>/<trial name>/`. Returns
    (grid directory, every trial's summary: completed, failed, stopped early or interrupted)."""
    started = started or time.time()
    grid = sweep.resolved(grid)
    _preflight([t.spec for t in grid.trials], echo, on_ray=True)
    with _on_ray([t.spec for t in grid.trials], echo, alone=False):
        grid_dir = rundir.create(grid.output_dir, grid.name)
        rundir.write_submission(grid.output_dir, grid_dir)
        rundir.write_grid(grid_dir, grid)
        runs = {t.name: rundir.create(grid_dir, t.name) for t in grid.trials}
        return grid_dir, _run_trials(grid, grid.trials, grid_dir, runs, echo, max_concurrent, started, resume=False)


def search(search: sweep.Search, echo: Echo, max_concurrent: Optional[int] = None,
           started: Optional[float] = None) -> tuple[str, list[rundir.Summary]]:
    """A sampled search on Ray Tune into `<search dir>/sample-<trial id>/` (with repeat: `.../seed=S/`). Returns
    (search directory, every run's summary: completed, failed, stopped early or interrupted)."""
    grids = _grids()
    started = started or time.time()
    search = sweep.resolved(search)
    base = search.sample({}, search.name)
    _preflight([base], echo, on_ray=True)
    with _on_ray([base], echo, alone=False) as (ray_train, _):
        search_dir = rundir.create(search.output_dir, search.name)
        rundir.write_submission(search.output_dir, search_dir)
        rundir.write_search(search_dir, search)
        s = search.search
        at_once = grids.at_once(base.scaling, s.num_samples, max_concurrent or search.tune.max_concurrent)
        seeds = f", {search.repeat} seeds each" if search.repeat > 1 else ""
        echo(f"search directory: {search_dir}  ({s.num_samples} samples, {s.algorithm}{seeds}, {at_once} at a time)")
        summaries = _searched(search_dir, started, lambda: grids.run_search(search, search_dir, at_once,
                                                                            ray_train.Fault.from_env()))
    return search_dir, _ended(summaries, search_dir)


@contextlib.contextmanager
def _summaries_first():
    """Ctrl-C or SIGTERM while a grid's or a search's summaries are written (Tune has ended, the command has
    not): taken once every one is written, as a KeyboardInterrupt, instead of leaving trials without theirs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, lambda signum, frame: asked.append(signum))
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    if asked:
        raise KeyboardInterrupt


def _searched(search_dir: str, started: float, go) -> tuple[list, bool]:
    """go() runs a search's Tune experiment; then (every run's summary, whether Ctrl-C ended it)."""
    interrupted = False
    try:
        go()
    except KeyboardInterrupt:
        interrupted = True
    try:
        with _summaries_first():
            summaries = _settle(search_dir, started, interrupted)
    except KeyboardInterrupt:
        interrupted = True
    return summaries, interrupted


def _ended(searched: tuple[list, bool], search_dir: str) -> list:
    """The summaries of a search that ran; Interrupted (exit 130) if Ctrl-C ended it, once Ray is left."""
    summaries, interrupted = searched
    if interrupted:
        raise Interrupted(f"interrupted; the samples' last evaluated models are in {search_dir}")
    return summaries


def _settle(search_dir: str, started: float, interrupted: bool) -> list[rundir.Summary]:
    """Every run of a search with a summary: the ones Tune ended before they could write theirs are
    stopped early (ASHA) or interrupted (Ctrl-C)."""
    summaries = []
    for run in storage.folders_holding(search_dir, rundir.CONFIG):
        if rundir.has_summary(run):
            summaries.append(rundir.read_summary(run))
            continue
        spec = rundir.read_config(run)
        if interrupted:
            status, error = rundir.Status.INTERRUPTED, "interrupted by the user"
        elif rundir.finished(run, spec):
            status, error = rundir.Status.COMPLETED, None
        else:
            status, error = rundir.Status.STOPPED, "stopped early by the asha scheduler"
        summaries.append(rundir.finish(run, spec, status, started, error))
        values = storage.join(run, rundir.VALUES)
        if storage.exists(values):
            telemetry.write_hparams(run, json.loads(storage.read_bytes(values)), summaries[-1].final_accuracy,
                                    summaries[-1].best_accuracy)
    return summaries


def _run_trials(grid: sweep.Grid, todo, grid_dir: str, runs: dict, echo: Echo, max_concurrent, started,
                resume: bool) -> list[rundir.Summary]:
    """Run `todo` (trials of grid) into their directories, each locked meanwhile; a summary for every
    trial of the grid, the ones not in `todo` as they were."""
    ray_train, grids = _ray_train(), _grids()

    todo_grid = dataclasses.replace(grid, trials=tuple(todo))
    at_once = grids.concurrency(todo_grid, max_concurrent)
    with contextlib.ExitStack() as locks:
        for trial in todo:
            locks.enter_context(rundir.lock(runs[trial.name]))
            rundir.write_config(runs[trial.name], trial.spec)
        echo(f"grid directory: {grid_dir}  ({len(todo)} trials{' to resume' if resume else ''}, "
             f"{at_once} at a time)")
        outcomes, interrupted = {}, False
        try:
            outcomes = grids.run(todo_grid, grid_dir, runs, at_once, resume, ray_train.Fault.from_env())
        except KeyboardInterrupt:
            interrupted = True
        try:
            with _summaries_first():
                summaries = [_trial_summary(trial, runs[trial.name], trial in todo, outcomes, started)
                             for trial in grid.trials]
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise Interrupted(f"interrupted; the trials' last evaluated models are in {grid_dir}")
    return summaries


def _trial_summary(trial: sweep.Trial, run: str, ran: bool, outcomes: dict, started: float) -> rundir.Summary:
    """A grid trial's summary: as it was if it did not run now, else written from its outcome (none: Ctrl-C
    ended the grid; a trial that reached its last iteration is completed)."""
    if not ran:
        return rundir.read_summary(run)
    status, error = outcomes.get(trial.name) or (
        (rundir.Status.COMPLETED, None) if rundir.finished(run, trial.spec)
        else (rundir.Status.INTERRUPTED, "interrupted by the user"))
    summary = rundir.finish(run, trial.spec, status, started, error)
    telemetry.write_hparams(run, dict(trial.values), summary.final_accuracy, summary.best_accuracy)
    return summary


def resume(location: str, echo: Echo, iters: Optional[int] = None, device_name: str = "auto",
           ray: Optional[bool] = None, scaling: Optional[dict] = None, progress=None,
           max_concurrent: Optional[int] = None, started: Optional[float] = None):
    """Carry on a run (or a grid's unfinished trials) in its own directory from its last checkpoint.

    iters: train on to this many iterations in all (a cosine schedule then spans the new total).
    ray: on Ray (True), in this process (False), or as the run was made (None: on Ray if it has ray/).
    scaling: scaling fields to change on Ray (workers, gpu). Returns (location, summaries), or None if
    there was nothing to do."""
    started = started or time.time()
    wrong = storage.problem(location)
    if wrong:
        raise BadInput(f"{location}: {wrong}")
    if rundir.is_grid(location):
        return _resume_grid(location, echo, iters, scaling or {}, max_concurrent, started)
    if rundir.is_search(location):
        return _resume_search(location, echo, iters, scaling or {}, max_concurrent, started)
    spec, state = _resumable(location, iters)
    if state and rundir.reached_target(spec, state["history"]):
        echo(f"{location}: reached its target accuracy ({spec.train.target_accuracy}%) at iteration "
             f"{state['iteration']}; nothing to do")
        return None
    target = iters or spec.train.iters
    if state and state["iteration"] >= target:
        if not rundir.has_summary(location) or rundir.read_summary(location).status != rundir.Status.COMPLETED:
            # it died between its last checkpoint and its end
            rundir.finish(location, spec, rundir.Status.COMPLETED, started)
        echo(f"{location}: already completed {state['iteration']} iterations; nothing to do "
             "(--iters N trains it on to N)")
        return None
    spec = _carried_on(spec, target, scaling or {})
    ray = storage.exists(storage.join(location, "ray")) if ray is None else ray
    done = state["iteration"] if state else 0
    if not ray:
        device = _loop().resolve_device(device_name)
        _preflight([spec], echo, on_ray=False, creates=False)
        with rundir.lock(location):
            _restart(location, spec, echo, done)
            return location, [_train_here(location, spec, device, started, progress, saved=state)]
    _preflight([spec], echo, on_ray=True, creates=False)
    with _on_ray([spec], echo, alone=True) as (ray_train, (spec,)):
        with rundir.lock(location):
            _restart(location, spec, echo, done)
            return location, [_train_on_ray(ray_train, location, spec, started, progress, resume=state is not None)]


def _resumable(run: str, iters: Optional[int]) -> tuple[specs.JobSpec, Optional[dict]]:
    """(its spec, its last checkpoint or None), or BadInput saying why the run cannot carry on."""
    if not storage.exists(storage.join(run, rundir.CONFIG)):
        raise BadInput(f"{run}: not a run directory (no {rundir.CONFIG}) nor a grid's (no {rundir.GRID}) or a "
                       f"search's (no {rundir.SEARCH})")
    spec = rundir.read_config(run)
    if rundir.running(run):
        raise BadInput(f"{run}: still running (another process trains into it)")
    state = None
    if storage.exists(storage.join(run, rundir.MODEL)):
        state = rundir.load_model(run)  # Unreadable (exit 2) when damaged or not ours
        saved = specs.from_dict(state["spec"], storage.join(run, rundir.MODEL))
        # what trains the model must match; its length may grow, and where and on how many workers it runs
        # may change (the global batch, so the math, stays the same)
        def trains(s):
            return s.name, s.model, dataclasses.replace(s.train, iters=0)

        if trains(saved) != trains(spec):
            raise BadInput(f"{run}: its {rundir.MODEL} was trained with another spec than its {rundir.CONFIG}; "
                           "resume only what that spec trained")
    if iters is not None and state and iters < state["iteration"]:
        raise BadInput(f"--iters {iters}: {run} has trained {state['iteration']} iterations already")
    return spec, state


def _carried_on(spec: specs.JobSpec, iters: int, scaling: dict) -> specs.JobSpec:
    if "workers" in scaling:  # the CPUs each worker got were the cluster's share for the old count
        scaling = {**scaling, "cpus_per_worker": None}
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, iters=iters),
                               scaling=dataclasses.replace(spec.scaling, **scaling))
    specs.from_dict(spec.to_dict(), "resume")  # the changed fields, checked like any spec
    return spec


def _restart(run: str, spec: specs.JobSpec, echo: Echo, done: int) -> None:
    """The run directory made ready to carry on: its new config, no outcome of the last attempt."""
    rundir.write_config(run, spec)
    rundir.clear_outcome(run)
    rundir.write_submission(storage.parent(run), run)
    echo(f"run directory: {run}  (resuming at iteration {done}, to {spec.train.iters} iterations)")


def _resume_grid(grid_dir: str, echo: Echo, iters, scaling: dict, max_concurrent, started):
    grid = rundir.read_grid(grid_dir)
    runs = {t.name: storage.join(grid_dir, t.name) for t in grid.trials}
    todo = []
    for trial in grid.trials:
        ended = rundir.read_summary(runs[trial.name]).status if rundir.has_summary(runs[trial.name]) else None
        if ended in (rundir.Status.COMPLETED, rundir.Status.STOPPED) and iters is None:
            continue  # finished, or stopped by the scheduler on purpose: left as they are
        spec, state = _resumable(runs[trial.name], iters)
        if state and (state["iteration"] >= (iters or spec.train.iters)
                      or rundir.reached_target(spec, state["history"])):
            continue
        todo.append(dataclasses.replace(trial, spec=_carried_on(spec, iters or spec.train.iters, scaling)))
    if not todo:
        echo(f"{grid_dir}: every trial has completed or was stopped by the scheduler; nothing to do")
        return None
    _preflight([t.spec for t in todo], echo, on_ray=True, creates=False)
    with _on_ray([t.spec for t in todo], echo, alone=False):
        rundir.write_submission(storage.parent(grid_dir), grid_dir)
        for trial in todo:
            rundir.clear_outcome(runs[trial.name])
        resumed = {t.name: t for t in todo}
        grid = dataclasses.replace(grid, trials=tuple(resumed.get(t.name, t) for t in grid.trials))
        return grid_dir, _run_trials(grid, todo, grid_dir, runs, echo, max_concurrent, started, resume=True)


def _resume_search(search_dir: str, echo: Echo, iters, scaling: dict, max_concurrent, started):
    """Carry a search on: its samples that did not end (interrupted, failed) from their run directories,
    then the samples it had still to draw, by its search algorithm as Tune recorded it."""
    grids = _grids()
    changed = [flag for flag, given in (("--iters", iters is not None), ("--workers", "workers" in scaling),
                                        ("--gpu", "gpu" in scaling), ("--max-concurrent", max_concurrent))
               if given]
    if changed:
        raise BadInput(f"{' '.join(changed)}: a search carries on as it was recorded ({search_dir}); "
                       "these apply to a run or a grid")
    search = rundir.read_search(search_dir)
    runs = storage.folders_holding(search_dir, rundir.CONFIG)
    busy = [run for run in runs if rundir.running(run)]
    if busy:
        raise BadInput(f"{busy[0]}: still running (another process trains into it)")
    unfinished = [run for run in runs if not rundir.has_summary(run)
                  or rundir.read_summary(run).status in (rundir.Status.INTERRUPTED, rundir.Status.FAILED)]
    drawn = len({storage.relative(run, search_dir).split("/")[0] for run in runs})
    if not unfinished and drawn >= search.search.num_samples:
        echo(f"{search_dir}: every sample has ended (completed, or stopped by the scheduler); nothing to do")
        return None
    if not grids.can_resume_search(search_dir):
        raise BadInput(f"{search_dir}: Tune's record of this search ({grids.EXPERIMENT}/) is missing or unreadable; "
                       "it cannot carry on")
    base = search.sample({}, search.name)
    _preflight([base], echo, on_ray=True, creates=False)
    with _on_ray([base], echo, alone=False) as (ray_train, _):
        rundir.write_submission(storage.parent(search_dir), search_dir)
        echo(f"search directory: {search_dir}  (resuming: {len(unfinished)} unfinished run(s), "
             f"{max(0, search.search.num_samples - drawn)} sample(s) still to draw)")
        summaries = _searched(search_dir, started, lambda: grids.resume_search(search, search_dir,
                                                                               ray_train.Fault.from_env()))
    return search_dir, _ended(summaries, search_dir)


def evaluate(location: str, device_name: str) -> tuple[int, float]:
    """A saved model's (iteration, test accuracy in %): a run directory or its model.pt, path or URI."""
    wrong = storage.problem(location)
    if wrong:
        raise BadInput(f"{location}: {wrong}")
    if not storage.exists(location):
        raise BadInput(f"{location}: no such run directory or model file")
    state = rundir.load_model(location)  # Unreadable (exit 2) when damaged or not ours
    spec = specs.resolved(specs.from_dict(state["spec"], location))
    device = _loop().resolve_device(device_name)
    loop = _loop()
    model = loop.build_model(spec, device.type)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # weights of another shape than its own spec says
        raise rundir.Unreadable(f"{location}: its weights do not fit the model its spec describes "
                                f"({str(e).splitlines()[0][:80]})") from None
    images, labels = data.load(spec.data.root, train=False)
    correct = loop.evaluate(model.to(device), images, labels, device).item()
    return state["iteration"], 100.0 * correct / len(labels)
