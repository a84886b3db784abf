"""Run directories: the contract between training and everything that reads results.

    <out>/<name>/config.yaml     the resolved spec
                 metrics.jsonl   one object per evaluation: iteration, loss, accuracy (%), elapsed (s)
                 summary.json    name, status, iterations, final_accuracy, final_loss, wall_seconds, ...
                 model.pt        weights, optimizer and progress: loadable by any rnnjob command
                 progress.json   where it stands between evaluations (for watch)
                 events.out.tfevents.*   TensorBoard's view of the same numbers
    <out>/<grid>/grid.yaml       a grid's name, tune settings and trials; one run directory per trial

A run directory is a location (see storage): a local or shared folder, or a URI. Every file is
written whole (under a temporary name, then renamed, where the file system allows), so a reader,
or a crash, never sees half a file.
"""

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import time
from typing import Optional

import torch
import yaml

from . import spec as specs
from . import storage
from .model import RNNModel, count_params

CONFIG, METRICS, SUMMARY, MODEL = "config.yaml", "metrics.jsonl", "summary.json", "model.pt"
PROGRESS = "progress.json"  # where a run stands between evaluations (telemetry.ProgressFile writes it)
GRID = "grid.yaml"  # in a grid's directory: its name, tune settings and trials, for `rnnjob resume`
SEARCH = "search.yaml"  # in a search's directory: what it searched, for `rnnjob resume`
VALUES = "values.json"  # in a sample's directory: what the search drew for it
LOCK = ".lock"  # held by the process that trains into a run directory (a local or shared folder)
FAILED = ".failed"  # why Ray workers stopped on a failure that a retry would only repeat
STOP = ".stop-requested"  # the driver of a Ray job was stopped: its workers end at their next tick
STALE_S = 600  # a run on an object store (no locks there) counts as running while it reported this recently
FORMAT = "rnnjob-model/2"  # /2: the optimizer's state is torch.optim's own state_dict
READABLE = {FORMAT, "rnnjob-model/1"}  # /1's weights still load (rnnjob eval)


def create(out_dir, name: str) -> str:
    """A fresh directory <out_dir>/<name>, or <name>-2, -3, ... if taken: never reuse one."""
    for n in range(1, 100_000):
        run = storage.join(out_dir, name if n == 1 else f"{name}-{n}")
        if storage.make_new_dir(run):  # two jobs racing for one name get different directories
            return run
    raise RuntimeError(f"{out_dir}: no free run directory name for {name!r}")


@contextlib.contextmanager
def lock(run):
    """Held while this process trains into `run`; a second process that tries is refused (BadInput).
    Object stores have no locks: there, `running` goes by how recently the run reported progress."""
    if storage.is_uri(run):
        yield
        return
    fd = os.open(storage.join(run, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise specs.SpecError(f"{run}: still running (another process trains into it)") from None
        yield
    finally:
        os.close(fd)


def running(run) -> bool:
    """Whether a process trains into `run` right now (its lock is held; on an object store: it reported
    progress in the last STALE_S seconds, or it has no summary and nothing else to go by)."""
    if storage.is_uri(run):
        place = storage.join(run, PROGRESS)
        if not storage.exists(place):
            return not has_summary(run)
        try:
            return time.time() - json.loads(storage.read_bytes(place)).get("updated", 0) < STALE_S
        except ValueError:
            return True
    try:
        fd = os.open(storage.join(run, LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # never locked: made by an older rnnjob, or not yet started
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def write_config(run, spec: specs.JobSpec) -> None:
    storage.write_bytes(storage.join(run, CONFIG), specs.dump(spec).encode())


def read_config(run) -> specs.JobSpec:
    where = storage.join(run, CONFIG)
    return specs.from_dict(specs.parse_yaml(storage.read_bytes(where).decode(), where), where)


def write_metrics(run, history: list[dict]) -> None:
    """The whole history each time: after a resume it holds every evaluation exactly once."""
    storage.write_bytes(storage.join(run, METRICS), "".join(json.dumps(r) + "\n" for r in history).encode())


def read_metrics(run) -> list[dict]:
    where = storage.join(run, METRICS)
    if not storage.exists(where):
        return []
    return [json.loads(line) for line in storage.read_bytes(where).decode().splitlines() if line.strip()]


def finish(run, spec: specs.JobSpec, status: str, started: float, error: Optional[str] = None,
           device: Optional[str] = None) -> dict:
    """Write the run's summary.json from what its directory holds (the last model.pt, else the
    metrics), for every outcome: completed, failed, interrupted, stopped. The one summary writer.

    device: where it trained, for a run that failed before its first checkpoint said so."""
    state = load_model(run) if storage.exists(storage.join(run, MODEL)) else {}
    history = state.get("history") or read_metrics(run)
    setup = state.get("setup") or {
        "device": device or ("cuda" if spec.scaling.gpu else "cpu"), "workers": spec.scaling.workers,
        "threads": None, "nodes": None, "gradient_sync": None,
        "params": count_params(RNNModel(28, spec.model.hidden_dim, spec.model.layer_dim, 10,
                                        spec.model.nonlinearity, spec.model.cell))}
    last = history[-1] if history else {}
    summary = {
        "name": spec.name,
        "status": status,
        "iterations": state.get("iteration", last.get("iteration", 0)),
        "final_accuracy": last.get("accuracy"),
        "final_loss": last.get("loss"),
        "best_accuracy": max((r["accuracy"] for r in history), default=None),
        "wall_seconds": round(time.time() - started, 3),
        "train_seconds": round(state.get("train_seconds", 0.0), 3),
        "device": setup["device"],
        "workers": setup["workers"],
        "threads": setup["threads"],  # per worker
        "params": setup["params"],
        "restarts": state.get("restarts", 0),
        "resumes": state.get("resumes", []),
        "nodes": setup["nodes"],
        "gradient_sync": setup["gradient_sync"],
    }
    stretched = [r for r in summary["resumes"] if r["iters"] != r["previous_iters"]]
    if stretched and spec.train.lr_decay == "cosine":
        r = stretched[-1]
        summary["lr_schedule"] = (f"cosine over {r['iters']} iterations since the resume at iteration "
                                  f"{r['iteration']} (over {r['previous_iters']} before it)")
    if spec.data.validation:  # what a search should compare: accuracy on held-out training images
        summary["final_val_accuracy"] = last.get("val_accuracy")
        summary["best_val_accuracy"] = max((r["val_accuracy"] for r in history if "val_accuracy" in r), default=None)
    target = spec.train.target_accuracy
    if target is not None:  # time to accuracy: where and when the first evaluation reached it, if one did
        reached = next((r for r in history if r["accuracy"] >= target), None)
        summary["target_accuracy"] = target
        summary["reached_target"] = reached and {
            "iteration": reached["iteration"], "elapsed_seconds": reached["elapsed"],
            "train_seconds": summary["train_seconds"] if reached is last else None}
    if error:
        summary["error"] = error
    storage.write_bytes(storage.join(run, SUMMARY), (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def write_grid(grid_dir, grid: specs.Grid) -> None:
    text = {"name": grid.name, "tune": dataclasses.asdict(grid.tune), "repeat": grid.repeat,
            "trials": [t.name for t in grid.trials],
            "values": {t.name: [[k, v] for k, v in t.values] for t in grid.trials}}
    storage.write_bytes(storage.join(grid_dir, GRID), yaml.safe_dump(text, sort_keys=False).encode())


def read_grid(grid_dir) -> specs.Grid:
    """A grid's directory as a Grid again: its trials' specs from their own config.yaml."""
    where = storage.join(grid_dir, GRID)
    raw = specs.parse_yaml(storage.read_bytes(where).decode(), where)
    tune = specs.TuneSpec(**raw["tune"])
    trials = tuple(specs.Trial(name, read_config(storage.join(grid_dir, name)),
                               tuple((k, v) for k, v in raw["values"][name])) for name in raw["trials"])
    # a grid recorded before grids could repeat has no repeat: it ran each combination once
    return specs.Grid(raw["name"], trials, tune, str(grid_dir), repeat=raw.get("repeat", 1))


def write_search(search_dir, search: specs.Search) -> None:
    text = {"name": search.name, "search": dataclasses.asdict(search.search), "repeat": search.repeat,
            "tune": dataclasses.asdict(search.tune),
            "space": {key: {kind: list(args)} for key, kind, args in search.space}, "base": search.base}
    storage.write_bytes(storage.join(search_dir, SEARCH), yaml.safe_dump(text, sort_keys=False).encode())


def read_search(search_dir) -> specs.Search:
    """A search's directory as a Search again, from its search.yaml (for `rnnjob resume`)."""
    where = storage.join(search_dir, SEARCH)
    raw = specs.parse_yaml(storage.read_bytes(where).decode(), where)
    try:
        space = tuple((key, kind, tuple(args)) for key, d in raw["space"].items() for kind, args in d.items())
        base = specs.from_dict({**raw["base"], "name": raw["name"]}, where)
        return specs.Search(raw["name"], raw["base"], space, specs.SearchSpec(**raw["search"]),
                            specs.TuneSpec(**raw["tune"]), raw["repeat"], base.output.location)
    except (KeyError, TypeError, AttributeError) as e:
        raise specs.SpecError(f"{where}: not a search record this rnnjob reads ({type(e).__name__}: {e})") from None


def judged_on(location) -> Optional[str]:
    """The tune.metric a grid's or search's directory was judged on (its grid.yaml or search.yaml);
    None for any other folder, or a record that cannot be read."""
    for record in (GRID, SEARCH):
        where = storage.join(location, record)
        try:
            raw = specs.parse_yaml(storage.read_bytes(where).decode(), where)
        except (OSError, ValueError):  # absent, unreadable, not UTF-8, not YAML (SpecError)
            continue
        tune = raw.get("tune")
        return tune.get("metric") if isinstance(tune, dict) else None
    return None


def is_grid(location) -> bool:
    return storage.exists(storage.join(location, GRID))


def is_search(location) -> bool:
    return storage.exists(storage.join(location, SEARCH))


def read_summary(run) -> dict:
    return json.loads(storage.read_bytes(storage.join(run, SUMMARY)))


def last_iteration(run) -> int:
    """The iteration of the run's last evaluation (its last checkpoint), 0 if none."""
    history = read_metrics(run)
    return history[-1]["iteration"] if history else 0


def reached_target(spec: specs.JobSpec, history: list) -> bool:
    """Whether the last evaluation reached train.target_accuracy (time to accuracy: the run ends there)."""
    target = spec.train.target_accuracy
    return target is not None and bool(history) and history[-1]["accuracy"] >= target


def finished(run, spec: specs.JobSpec) -> bool:
    """Whether the run trained to its end: all its iterations, or an evaluation that reached its
    train.target_accuracy (the loop stops at the first one)."""
    history = read_metrics(run)
    return bool(history) and (history[-1]["iteration"] >= spec.train.iters or reached_target(spec, history))


def clear_outcome(run) -> None:
    """Forget how the last attempt ended (its summary, a failure's reason): the run carries on."""
    for name in (SUMMARY, FAILED, STOP):
        storage.remove(storage.join(run, name))


def has_summary(run) -> bool:
    return storage.exists(storage.join(run, SUMMARY))


def save_model(run, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    storage.write_bytes(storage.join(run, MODEL), buf.getvalue())


def load_model(path) -> dict:
    """The state in a model.pt (a file location, or a run directory holding one)."""
    if storage.is_dir(path):
        path = storage.join(path, MODEL)
    data = storage.read_bytes(path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # empty, cut short, another format: torch raises several kinds
        why = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not an rnnjob model file ({why})") from None
    if not isinstance(state, dict) or state.get("format") not in READABLE:
        raise ValueError(f"{path}: not an rnnjob model file")
    return state
