"""Results of many runs as one table, and as one figure. Both read run directories only,
so they work on runs from `rnnjob run`, `submit`, grids, and runs copied from elsewhere."""

import csv
import io
import json
import re
import statistics
import time
from pathlib import Path

from . import rundir, storage, telemetry
from . import spec as specs

COLUMNS = ["name", "cell", "nonlinearity", "layers", "hidden", "optimizer", "lr", "iterations",
           "final_accuracy", "best_accuracy", "val_accuracy", "wall_seconds", "workers", "device", "status"]
FORMATS = ("table", "csv", "json", "markdown")
# a search's configuration run at several seeds (`repeat`): mean and standard deviation over them
CONFIGURATION_COLUMNS = ["configuration", "seeds", "final_accuracy_mean", "final_accuracy_std", "val_accuracy_mean",
                         "val_accuracy_std", "completed"]
SEED_RUN = re.compile(r"(?P<configuration>.+)/seed=\d+")


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
        "val_accuracy": summary.get("final_val_accuracy", last.get("val_accuracy")),
        "wall_seconds": summary.get("wall_seconds"),
        "workers": summary.get("workers", spec.scaling.workers),
        "device": summary.get("device", "cuda" if spec.scaling.gpu else "cpu"),
        # no summary: still training, or the process died (killed, its node gone) before writing one
        "status": summary.get("status") or ("running" if rundir.running(run) else "died"),
    }


def ranked_by(root) -> str:
    """The accuracy that orders root's runs: val_accuracy for a grid or search judged on it (tune.metric),
    so that its table never invites choosing by the test set; else final_accuracy."""
    return "val_accuracy" if rundir.judged_on(root) == "val_accuracy" else "final_accuracy"


def _best_first(table: list[dict], column: str, name: str) -> None:
    table.sort(key=lambda r: (r[column] is None, -(r[column] or 0), r[name]))


def rows(root, by: str = "final_accuracy") -> tuple[list[dict], list[str]]:
    """(one row per readable run, best `by` first; a line per run that could not be read)."""
    found, unreadable = [], []
    for run in find_runs(root):
        try:
            found.append(row(run, root))
        except (specs.SpecError, ValueError, OSError) as e:
            unreadable.append(f"{run}: skipped, {str(e).splitlines()[0]}")
    _best_first(found, by, "name")
    return found, unreadable


def tables(root) -> tuple[list[dict], list[dict], list[str]]:
    """What `rnnjob results` shows of root: every run's row, then every configuration's that ran at several
    seeds, both best first by `ranked_by`; and a line per run that could not be read."""
    by = ranked_by(root)
    found, unreadable = rows(root, by)
    return found, configurations(found, by), unreadable


def cell(value) -> str:
    """One value as text, the same in every text format (so they parse back alike)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 0.1 else f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def configurations(table: list[dict], column: str = "final_accuracy") -> list[dict]:
    """One row per configuration that ran at several seeds (runs named <configuration>/seed=S): the
    mean and standard deviation of its completed runs' final accuracies, best mean of `column` first."""
    groups: dict = {}
    for r in table:
        match = SEED_RUN.fullmatch(r["name"])
        if match:
            groups.setdefault(match["configuration"], []).append(r)
    out = []
    for name, group in groups.items():
        done = [r for r in group if r["status"] == "completed"]
        acc = [r["final_accuracy"] for r in done if r["final_accuracy"] is not None]
        val = [r["val_accuracy"] for r in done if r["val_accuracy"] is not None]
        out.append({"configuration": name, "seeds": len(group), "completed": len(done),
                    "final_accuracy_mean": statistics.fmean(acc) if acc else None,
                    "final_accuracy_std": statistics.pstdev(acc) if acc else None,
                    "val_accuracy_mean": statistics.fmean(val) if val else None,
                    "val_accuracy_std": statistics.pstdev(val) if val else None})
    _best_first(out, f"{column}_mean", "configuration")
    return out


def render(table: list[dict], fmt: str, columns: list[str] = COLUMNS) -> str:
    if fmt == "json":
        return json.dumps(table, indent=2)
    text = [[cell(r[c]) for c in columns] for r in table]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(text)
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in text])
    widths = [max(len(c), *(len(r[i]) for r in text)) for i, c in enumerate(columns)]

    def fmt_row(r):
        return "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()

    return "\n".join([fmt_row(columns)] + [fmt_row(r) for r in text])


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


# the live view of `rnnjob watch`: rows from run directories (or from a job's log), until they end

ENDED_WELL = ("completed", "stopped")  # stopped: by ASHA, which is how a grid should end for it


def live_row(run: str, root) -> dict:
    """Where one run stands: its summary once it ended, else its progress.json and metrics."""
    iters = rundir.read_config(run).train.iters
    if rundir.has_summary(run):
        s = rundir.read_summary(run)
        return {"name": storage.relative(run, root), "status": s["status"], "iteration": s["iterations"],
                "iters": iters, "loss": s["final_loss"], "accuracy": s["final_accuracy"],
                "samples_per_second": None, "seconds_left": 0, "error": s.get("error")}
    now = telemetry.read_progress(run) or {}
    metrics = rundir.read_metrics(run)
    iteration = max(now.get("iteration", 0), metrics[-1]["iteration"] if metrics else 0)
    per_step = now.get("seconds_per_step")
    status = ("running" if now or metrics else "starting") if rundir.running(run) else "died"
    return {"name": storage.relative(run, root), "status": status,
            "iteration": iteration, "iters": iters, "loss": now.get("loss"),
            "accuracy": metrics[-1]["accuracy"] if metrics else None,
            "samples_per_second": now.get("samples_per_second"),
            "seconds_left": (iters - iteration) * per_step if per_step else None,
            "error": None if status != "died" else "it ended without a summary (killed?); rnnjob resume carries it on"}


def live_rows(root) -> list[dict]:
    return [live_row(run, root) for run in find_runs(root)]


def ended(rows: list[dict]) -> bool:
    return bool(rows) and all(r["status"] not in ("running", "starting") for r in rows)


def line(r: dict) -> str:
    """One row as a line of text: what `watch` prints where there is no terminal, and at the end."""
    parts = [f"{r['name']}: {r['status']}", f"{r['iteration']}/{r['iters']} iterations"]
    if r["loss"] is not None:
        parts.append(f"loss {r['loss']:.4f}")
    if r["accuracy"] is not None:
        parts.append(f"accuracy {r['accuracy']:.2f}%")
    if r["samples_per_second"]:
        parts.append(f"{r['samples_per_second']:.0f} samples/s")
    if r["seconds_left"] is not None and r["status"] == "running":
        parts.append(f"{r['seconds_left']:.0f} s left")
    if r["error"]:
        parts.append(r["error"])
    return ", ".join(parts)


def live_table(rows: list[dict]):
    """The rows as a rich table with a bar each, for a terminal."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("run", "", "iterations", "loss", "accuracy", "samples/s", "left", "status"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], ProgressBar(total=r["iters"], completed=r["iteration"], width=30),
                      f"{r['iteration']}/{r['iters']}", "" if r["loss"] is None else f"{r['loss']:.4f}",
                      "" if r["accuracy"] is None else f"{r['accuracy']:.2f}%",
                      f"{r['samples_per_second']:.0f}" if r["samples_per_second"] else "",
                      f"{r['seconds_left']:.0f} s" if r["seconds_left"] is not None and r["status"] == "running"
                      else "", r["status"])
    return table


def follow(look, echo, terminal: bool, interval: float = 1.0) -> list[dict]:
    """Show what look() returns, (rows, whether the job ended), every `interval` seconds until it ended:
    a live table on a terminal, else a line per run whenever its evaluation or status changes.
    Returns the last rows."""
    shown: dict = {}

    def lines(rows):
        for r in rows:
            key = (r["status"], r["accuracy"], r["iteration"] if r["status"] != "running" else None)
            if shown.get(r["name"]) != key:
                shown[r["name"]] = key
                echo(line(r))

    if not terminal:
        rows, done = look()
        while not done:
            lines(rows)
            time.sleep(interval)
            rows, done = look()
        lines(rows)
        return rows
    from rich.live import Live

    rows, done = look()
    with Live(live_table(rows), refresh_per_second=4) as view:
        while not done:
            time.sleep(interval)
            rows, done = look()
            view.update(live_table(rows))
    return rows
