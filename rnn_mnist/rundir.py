"""Run directories: the contract between training and everything that reads results.

    <out>/<name>/config.yaml     the resolved spec
                 metrics.jsonl   one object per evaluation: iteration, loss, accuracy (%), elapsed (s)
                 summary.json    name, iterations, final_accuracy, final_loss, wall_seconds, ...
                 model.pt        weights, optimizer and progress: loadable by any rnnjob command

Every file is written under a temporary name and renamed into place, so a reader
(or a crash) never sees half a file.
"""

import io
import json
from pathlib import Path

import torch

from . import spec as specs
from .files import atomic_write

CONFIG, METRICS, SUMMARY, MODEL = "config.yaml", "metrics.jsonl", "summary.json", "model.pt"
FORMAT = "rnnjob-model/1"


def create(out_dir, name: str) -> Path:
    """A fresh directory <out_dir>/<name>, or <name>-2, -3, ... if taken: never reuse one."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100_000):
        path = out / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()  # atomic: two jobs racing for one name get different directories
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"{out}: no free run directory name for {name!r}")


def write_config(run: Path, spec: specs.JobSpec) -> None:
    atomic_write(run / CONFIG, specs.dump(spec).encode())


def write_metrics(run: Path, history: list[dict]) -> None:
    """The whole history each time: after a resume it holds every evaluation exactly once."""
    atomic_write(run / METRICS, "".join(json.dumps(r) + "\n" for r in history).encode())


def write_summary(run: Path, summary: dict) -> None:
    atomic_write(run / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())


def save_model(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write(Path(path), buf.getvalue())


def load_model(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an rnnjob model file")
    return state


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(run: Path) -> dict:
    return json.loads((Path(run) / SUMMARY).read_text())
