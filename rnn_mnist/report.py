"""Results of many runs as one table, and as one figure. Both read run directories only,
so they work on runs from `rnnjob run`, `submit`, grids, and runs copied from elsewhere."""

import csv
import enum
import io
import json
import re
import statistics
import time
from pathlib import Path

from . import rundir, storage, telemetry
from . import spec as specs
from .errors import BadInput

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


class Live(enum.StrEnum):
    """Where a run without a summary stands, as `results` and `watch` show it."""

    STARTING = "starting"  # no evaluation or progress yet
    RUNNING = "running"
    DIED = "died"  # no process trains into it, and it wrote no summary (killed, its node gone)


def row(run: str, root) -> dict:
    spec = rundir.read_config(run)
    metrics = rundir.read_metrics(run)
    last = metrics[-1] if metrics else {}
    m, t = spec.model, spec.train
    out = {
        "name": storage.relative(run, root),
        "cell": m.cell, "nonlinearity": m.nonlinearity, "layers": m.layer_dim, "hidden": m.hidden_dim,
        "optimizer": t.optimizer, "lr": t.lr,
        "iterations": last.get("iteration", 0), "final_accuracy": last.get("accuracy"),
        "best_accuracy": max((r["accuracy"] for r in metrics), default=None),
        "val_accuracy": last.get("val_accuracy"), "wall_seconds": None, "workers": spec.scaling.workers,
        "device": "cuda" if spec.scaling.gpu else "cpu",
        "status": Live.RUNNING if rundir.running(run) else Live.DIED,
    }
    if rundir.has_summary(run):
        s = rundir.read_summary(run)
        out.update(iterations=s.iterations, final_accuracy=s.final_accuracy, val_accuracy=s.final_val_accuracy,
                   wall_seconds=s.wall_seconds, workers=s.workers, device=s.device, status=s.status)
    return out


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
        done = [r for r in group if r["status"] == rundir.Status.COMPLETED]
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def check_plot_file(out: Path) -> None:
    """Refuse, before anything is read or drawn, a file that matplotlib would not write, or a place for it that
    cannot hold a file."""
    plt = _pyplot()
    probe = plt.figure()
    kinds = probe.canvas.get_supported_filetypes()
    plt.close(probe)
    kind = out.suffix.lstrip(".").lower()
    if kind not in kinds:
        what = f".{kind} files" if kind else "a file without a suffix"
        raise BadInput(f"-o {out}: matplotlib writes {', '.join(sorted(kinds))}, not {what}")
    if out.is_dir():
        raise BadInput(f"-o {out}: is a folder; name the file to write")
    for place in out.parents:
        if place.exists():
            if not place.is_dir():
                raise BadInput(f"-o {out}: {place} is a file, not a folder")
            break


def plot(root, out: Path) -> tuple[int, list[str]]:
    """Test accuracy and loss against iteration, one line per run: (how many runs were drawn, a line for each
    run that could not be read and was left out)."""
    plt = _pyplot()
    series, unreadable = [], []
    for run in find_runs(root):
        try:
            series.append((storage.relative(run, root), rundir.read_metrics(run)))
        except rundir.Unreadable as e:
            unreadable.append(f"{run}: skipped, {e}")
    series = [(name, metrics) for name, metrics in series if metrics]
    if not series:
        return 0, unreadable
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
    return len(series), unreadable


# the live view of `rnnjob watch`: rows from run directories (or from a job's log), until they end

ENDED_WELL = (rundir.Status.COMPLETED, rundir.Status.STOPPED)  # stopped: by ASHA, how a grid should end for it


def live_row(run: str, root) -> dict:
    """Where one run stands: its summary once it ended, else its progress.json and metrics."""
    iters = rundir.read_config(run).train.iters
    if rundir.has_summary(run):
        s = rundir.read_summary(run)
        return {"name": storage.relative(run, root), "status": s.status, "iteration": s.iterations,
                "iters": iters, "loss": s.final_loss, "accuracy": s.final_accuracy,
                "samples_per_second": None, "seconds_left": 0, "error": s.error}
    now = telemetry.read_progress(run) or {}
    metrics = rundir.read_metrics(run)
    iteration = max(now.get("iteration", 0), metrics[-1]["iteration"] if metrics else 0)
    per_step = now.get("seconds_per_step")
    status = (Live.RUNNING if now or metrics else Live.STARTING) if rundir.running(run) else Live.DIED
    return {"name": storage.relative(run, root), "status": status,
            "iteration": iteration, "iters": iters, "loss": now.get("loss"),
            "accuracy": metrics[-1]["accuracy"] if metrics else None,
            "samples_per_second": now.get("samples_per_second"),
            "seconds_left": (iters - iteration) * per_step if per_step else None,
            "error": (None if status != Live.DIED
                      else "it ended without a summary (killed?); rnnjob resume carries it on")}


def status_row(name: str, status) -> dict:
    """A run known only by its status (a job on a cluster whose files this machine cannot read)."""
    return {"name": name, "status": status, "iteration": None, "iters": None, "loss": None, "accuracy": None,
            "samples_per_second": None, "seconds_left": None, "error": None}


def live_rows(root) -> list[dict]:
    return [live_row(run, root) for run in find_runs(root)]


def ended(rows: list[dict]) -> bool:
    return bool(rows) and all(r["status"] not in (Live.RUNNING, Live.STARTING) for r in rows)


def line(r: dict) -> str:
    """One row as a line of text: what `watch` prints where there is no terminal, and at the end."""
    parts = [f"{r['name']}: {r['status']}"]
    if r["iters"] is not None:
        parts.append(f"{r['iteration']}/{r['iters']} iterations")
    if r["loss"] is not None:
        parts.append(f"loss {r['loss']:.4f}")
    if r["accuracy"] is not None:
        parts.append(f"accuracy {r['accuracy']:.2f}%")
    if r["samples_per_second"]:
        parts.append(f"{r['samples_per_second']:.0f} samples/s")
    if r["seconds_left"] is not None and r["status"] == Live.RUNNING:
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
                      f"{r['seconds_left']:.0f} s" if r["seconds_left"] is not None and r["status"] == Live.RUNNING
                      else "", r["status"])
    return table


def follow(look, echo, terminal: bool, interval: float = 1.0) -> list[dict]:
    """Show what look() returns, (rows, whether the job ended), every `interval` seconds until it ended:
    a live table on a terminal, else a line per run whenever its evaluation or status changes.
    Returns the last rows."""
    shown: dict = {}

    def lines(rows):
        for r in rows:
            key = (r["status"], r["accuracy"], r["iteration"] if r["status"] != Live.RUNNING else None)
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
    from rich.live import Live as LiveView

    rows, done = look()
    with LiveView(live_table(rows), refresh_per_second=4) as view:
        while not done:
            time.sleep(interval)
            rows, done = look()
            view.update(live_table(rows))
    return rows
