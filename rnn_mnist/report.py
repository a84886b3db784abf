"""Results of many runs as one table, and as one figure. Both read run directories only,
so they work on runs from `rnnjob run`, `submit`, grids, and runs copied from elsewhere."""

import csv
import io
import json
from pathlib import Path

from . import rundir, storage
from . import spec as specs

COLUMNS = ["name", "cell", "nonlinearity", "layers", "hidden", "optimizer", "lr", "iterations",
           "final_accuracy", "best_accuracy", "wall_seconds", "workers", "device", "status"]
FORMATS = ("table", "csv", "json", "markdown")


def find_runs(root) -> list[str]:
    """Every run directory at or below root (a folder or a URI): the folders holding a config.yaml."""
    return storage.folders_holding(root, rundir.CONFIG)


def row(run: str, root) -> dict:
    spec = rundir.read_config(run)
    metrics = rundir.read_metrics(run)
    summary = rundir.read_summary(run) if rundir.has_summary(run) else {}
    last = metrics[-1] if metrics else {}
    m, t = spec.model, spec.train
    return {
        "name": storage.relative(run, root),
        "cell": m.cell, "nonlinearity": m.nonlinearity, "layers": m.layer_dim, "hidden": m.hidden_dim,
        "optimizer": t.optimizer, "lr": t.lr,
        "iterations": summary.get("iterations", last.get("iteration", 0)),
        "final_accuracy": summary.get("final_accuracy", last.get("accuracy")),
        "best_accuracy": max((r["accuracy"] for r in metrics), default=None),
        "wall_seconds": summary.get("wall_seconds"),
        "workers": summary.get("workers", spec.scaling.workers),
        "device": summary.get("device", "cuda" if spec.scaling.gpu else "cpu"),
        "status": summary.get("status", "incomplete"),  # no summary yet: running, or killed
    }


def rows(root) -> tuple[list[dict], list[str]]:
    """(one row per readable run, best final accuracy first; a line per run that could not be read)."""
    found, unreadable = [], []
    for run in find_runs(root):
        try:
            found.append(row(run, root))
        except (specs.SpecError, ValueError, OSError) as e:
            unreadable.append(f"{run}: skipped, {str(e).splitlines()[0]}")
    found.sort(key=lambda r: (r["final_accuracy"] is None, -(r["final_accuracy"] or 0), r["name"]))
    return found, unreadable


def cell(value) -> str:
    """One value as text, the same in every text format (so they parse back alike)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 0.1 else f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def render(table: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(table, indent=2)
    text = [[cell(r[c]) for c in COLUMNS] for r in table]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(text)
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in text])
    widths = [max(len(c), *(len(r[i]) for r in text)) for i, c in enumerate(COLUMNS)]
    fmt_row = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt_row(COLUMNS)] + [fmt_row(r) for r in text])


def plot(root, out: Path) -> int:
    """Test accuracy and loss against iteration, one line per run; returns how many runs were drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    series = [(storage.relative(run, root), rundir.read_metrics(run)) for run in find_runs(root)]
    series = [(name, metrics) for name, metrics in series if metrics]
    if not series:
        return 0
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(13, 5))
    for name, metrics in series:
        its = [m["iteration"] for m in metrics]
        acc.plot(its, [m["accuracy"] for m in metrics], marker="o", markersize=3, label=name)
        loss.plot(its, [m["loss"] for m in metrics], marker="o", markersize=3, label=name)
    acc.set(xlabel="iteration", ylabel="test accuracy (%)", title="Test accuracy")
    loss.set(xlabel="iteration", ylabel="training loss (last batch)", title="Loss", yscale="log")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
    acc.legend(fontsize="small")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return len(series)
