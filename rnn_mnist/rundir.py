"""Run directories: the contract between training and everything that reads results.

    <out>/<name>/config.yaml     the resolved spec
                 metrics.jsonl   one object per evaluation: iteration, loss, accuracy (%), elapsed (s)
                 summary.json    name, status, iterations, final_accuracy, final_loss, wall_seconds, ...
                 model.pt        weights, optimizer and progress: loadable by any rnnjob command

A run directory is a location (see storage): a local or shared folder, or a URI. Every file is
written whole (under a temporary name, then renamed, where the file system allows), so a reader,
or a crash, never sees half a file.
"""

import io
import json
import time
from typing import Optional

import torch

from . import spec as specs
from . import storage
from .model import RNNModel, count_params

CONFIG, METRICS, SUMMARY, MODEL = "config.yaml", "metrics.jsonl", "summary.json", "model.pt"
FORMAT = "rnnjob-model/2"  # /2: the optimizer's state is torch.optim's own state_dict
READABLE = {FORMAT, "rnnjob-model/1"}  # /1's weights still load (rnnjob eval)


def create(out_dir, name: str) -> str:
    """A fresh directory <out_dir>/<name>, or <name>-2, -3, ... if taken: never reuse one."""
    for n in range(1, 100_000):
        run = storage.join(out_dir, name if n == 1 else f"{name}-{n}")
        if storage.make_new_dir(run):  # two jobs racing for one name get different directories
            return run
    raise RuntimeError(f"{out_dir}: no free run directory name for {name!r}")


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
        "nodes": setup["nodes"],
        "gradient_sync": setup["gradient_sync"],
    }
    if error:
        summary["error"] = error
    storage.write_bytes(storage.join(run, SUMMARY), (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def read_summary(run) -> dict:
    return json.loads(storage.read_bytes(storage.join(run, SUMMARY)))


def last_iteration(run) -> int:
    """The iteration of the run's last evaluation (its last checkpoint), 0 if none."""
    history = read_metrics(run)
    return history[-1]["iteration"] if history else 0


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
    state = torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") not in READABLE:
        raise ValueError(f"{path}: not an rnnjob model file")
    return state
