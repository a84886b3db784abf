"""Run directories: the contract between training and everything that reads results.

    <out>/<name>/config.yaml     the resolved spec
                 metrics.jsonl   one object per evaluation: iteration, loss, accuracy (%), elapsed (s)
                 summary.json    how the run ended (`Summary`)
                 model.pt        weights, optimizer and progress: loadable by any rnnjob command
                 progress.json   where it stands between evaluations (for watch)
                 events.out.tfevents.*   TensorBoard's view of the same numbers
    <out>/<grid>/grid.yaml       a grid's name, tune settings and trials (`GridRecord`)
    <out>/<search>/search.yaml   a search's space and settings (`SearchRecord`)

A run directory is a location (see storage): a local or shared folder, or a URI. Every file is
written whole (under a temporary name, then renamed, where the file system allows), so a reader,
or a crash, never sees half a file. These files are read and written here only, and every reader
checks what it reads: a damaged file or one that is not rnnjob's is an `Unreadable` naming the file
and what is wrong, never a traceback further on.
"""

import contextlib
import dataclasses
import enum
import fcntl
import io
import json
import os
import time
import types
import typing
from pathlib import Path
from typing import Optional

import yaml

from . import spec as specs
from . import storage, sweep
from .errors import BadInput

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
SUBMISSIONS = ".submissions"  # below an output folder: <Jobs API id>.json, where that job's driver put its run
SUBMISSION_ENV = "RNNJOB_SUBMISSION"  # the Jobs API id of the job this driver runs, given by the submitter


class Unreadable(BadInput):
    """A run directory's file, or a grid's or search's record, that is damaged or not rnnjob's; the message
    names the file and what is wrong with it."""


class Status(enum.StrEnum):
    """How a run ended, as its summary.json says."""

    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, `rnnjob stop`: carried on by `rnnjob resume`
    STOPPED = "stopped"  # early, by the ASHA scheduler, on purpose


def _read_text(where) -> str:
    try:
        data = storage.read_bytes(where)
    except FileNotFoundError:
        raise Unreadable(f"{where}: missing") from None
    except IsADirectoryError:
        raise Unreadable(f"{where}: is a folder, not a file") from None
    except OSError as e:
        raise Unreadable(f"{where}: cannot read: {e.strerror or str(e).splitlines()[0]}") from None
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise Unreadable(f"{where}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None


def _read_json(where):
    try:
        return json.loads(_read_text(where))
    except json.JSONDecodeError as e:
        raise Unreadable(f"{where}: not JSON ({e.msg} at line {e.lineno})") from None


_JSON_TYPES = {int: (int,), float: (int, float), str: (str,), list: (list,), dict: (dict,), bool: (bool,)}


def _checked(cls, raw, where):
    """An instance of the record dataclass `cls` from a mapping read from a file: every field present that has
    no default, of its type (Optional: or null), nothing unknown; else Unreadable naming the field."""
    if not isinstance(raw, dict):
        raise Unreadable(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("file", True)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise Unreadable(f"{where}: {specs.show(unknown[0])[1:-1]}: not a field rnnjob writes")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Unreadable(f"{where}: {name}: missing")
            continue
        kind, value = hints[name], raw[name]
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
        base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
        base = typing.get_origin(base) or base
        if value is None and optional:
            values[name] = None
            continue
        if isinstance(base, type) and issubclass(base, enum.Enum):
            try:
                values[name] = base(value)
            except ValueError:
                choices = ", ".join(m.value for m in base)
                raise Unreadable(f"{where}: {name}: expected one of {choices}, got {specs.show(value)}") from None
            continue
        accepted = _JSON_TYPES.get(base, (base,))
        if not isinstance(value, accepted) or (isinstance(value, bool) and base is not bool):
            raise Unreadable(f"{where}: {name}: expected {base.__name__}{' or null' if optional else ''}, "
                             f"got {specs.show(value)}")
        values[name] = float(value) if base is float else value
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class Summary:
    """summary.json: how a run ended and what it reached. Written by `finish` on every outcome."""

    name: str
    status: Status
    iterations: int
    final_accuracy: Optional[float]
    final_loss: Optional[float]
    best_accuracy: Optional[float]
    wall_seconds: float
    train_seconds: float
    device: str
    workers: int
    threads: Optional[int]  # per worker; null where the run failed before its first checkpoint
    params: int
    restarts: int  # by Ray or Tune, after a worker or trial process died
    resumes: list  # where each `rnnjob resume` began, and to how many iterations
    nodes: Optional[list]
    gradient_sync: Optional[str]  # gloo, nccl, or null for one worker
    lr_schedule: Optional[str] = None  # written after a resume that stretched a cosine schedule
    final_val_accuracy: Optional[float] = None  # with data.validation (the two keys are then always written)
    best_val_accuracy: Optional[float] = None
    target_accuracy: Optional[float] = None  # with train.target_accuracy (and reached_target, null if never)
    reached_target: Optional[dict] = None
    error: Optional[str] = None
    validated: bool = dataclasses.field(default=False, metadata={"file": False})  # held images out

    def to_dict(self) -> dict:
        """As summary.json holds it: the keys of a section the run did not use are left out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("file", True)}
        out["status"] = self.status.value
        leave_out = {"lr_schedule": self.lr_schedule is None, "error": self.error is None,
                     "final_val_accuracy": not self.validated, "best_val_accuracy": not self.validated,
                     "target_accuracy": self.target_accuracy is None, "reached_target": self.target_accuracy is None}
        return {k: v for k, v in out.items() if not leave_out.get(k)}

    @classmethod
    def from_dict(cls, raw, where) -> "Summary":
        summary = _checked(cls, raw, where)
        return dataclasses.replace(summary, validated="final_val_accuracy" in raw)

    def metric(self, name: str) -> Optional[float]:
        """The final value of a tune.metric: accuracy, loss or val_accuracy."""
        return {"accuracy": self.final_accuracy, "loss": self.final_loss,
                "val_accuracy": self.final_val_accuracy}[name]


@dataclasses.dataclass(frozen=True)
class GridRecord:
    """grid.yaml: what `rnnjob resume` needs of a grid besides its trials' own run directories."""

    name: str
    tune: dict  # the grid's tune: section, as sweep.TuneSpec fields
    repeat: int
    trials: list  # trial names: each a run directory below the grid's
    values: dict  # trial name -> its [dotted key, value] pairs


@dataclasses.dataclass(frozen=True)
class SearchRecord:
    """search.yaml: a search's space and settings, for `rnnjob resume` and the record."""

    name: str
    search: dict  # sweep.SearchSpec fields
    repeat: int
    tune: dict  # sweep.TuneSpec fields
    space: dict  # dotted key -> {distribution: [arguments]}
    base: dict  # the job's own fields: what every sample starts from


def check_place(out_dir) -> None:
    """Refuse, before anything starts, a place for run directories that cannot be made or written: a folder
    below a file, or one this user cannot write in; a URI whose bucket is missing or whose store cannot be
    reached or refuses the credentials."""
    if storage.is_uri(out_dir):
        storage.check(out_dir)
        return
    for place in (Path(out_dir), *Path(out_dir).parents):
        if place.exists():
            if not place.is_dir():
                raise BadInput(f"output: {place} is a file, not a folder; runs cannot go below it ({out_dir})")
            if not os.access(place, os.W_OK | os.X_OK):
                raise BadInput(f"output: cannot write in {place} (runs go to {out_dir})")
            return


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
    """Whether a process trains into `run` right now (its lock is held; on an object store: it has no
    summary, which is the last thing a run writes and the first a resume removes, and it reported progress
    in the last STALE_S seconds or has no progress to go by yet)."""
    if storage.is_uri(run):
        place = storage.join(run, PROGRESS)
        if has_summary(run):
            return False
        if not storage.exists(place):
            return True
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
    return specs.from_dict(specs.parse_yaml(_read_text(where), where), where)


def write_metrics(run, history: list[dict]) -> None:
    """The whole history each time: after a resume it holds every evaluation exactly once."""
    storage.write_bytes(storage.join(run, METRICS), "".join(json.dumps(r) + "\n" for r in history).encode())


def read_metrics(run) -> list[dict]:
    """Every evaluation in metrics.jsonl ([] before the first); each line checked."""
    where = storage.join(run, METRICS)
    if not storage.exists(where):
        return []
    records = []
    for n, line in enumerate(_read_text(where).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise Unreadable(f"{where}: line {n}: not JSON ({e.msg})") from None
        numbers = isinstance(record, dict) and isinstance(record.get("iteration"), int) and all(
            isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)
            for k in ("loss", "accuracy", "elapsed"))
        if not numbers:
            raise Unreadable(f"{where}: line {n}: expected an evaluation (iteration, loss, accuracy, elapsed), "
                             f"got {specs.show(record)}")
        records.append(record)
    return records


def finish(run, spec: specs.JobSpec, status: Status, started: float, error: Optional[str] = None,
           device: Optional[str] = None) -> Summary:
    """Write the run's summary.json from what its directory holds (the last model.pt, else the
    metrics), for every outcome: completed, failed, interrupted, stopped. The one summary writer.

    device: where it trained, for a run that failed before its first checkpoint said so."""
    from .model import param_count  # with torch: here, where a run has trained, not in every reader

    state = load_model(run) if storage.exists(storage.join(run, MODEL)) else {}
    history = state.get("history") or read_metrics(run)
    m = spec.model
    setup = state.get("setup") or {
        "device": device or ("cuda" if spec.scaling.gpu else "cpu"), "workers": spec.scaling.workers,
        "threads": None, "nodes": None, "gradient_sync": None,
        "params": param_count(m.cell, m.hidden_dim, m.layer_dim)}
    last = history[-1] if history else {}
    train_seconds = round(state.get("train_seconds", 0.0), 3)
    resumes = state.get("resumes", [])
    stretched = [r for r in resumes if r["iters"] != r["previous_iters"]]
    lr_schedule = None
    if stretched and spec.train.lr_decay == "cosine":
        r = stretched[-1]
        lr_schedule = (f"cosine over {r['iters']} iterations since the resume at iteration {r['iteration']} "
                       f"(over {r['previous_iters']} before it)")
    reached = None
    target = spec.train.target_accuracy
    if target is not None:  # time to accuracy: where and when the first evaluation reached it, if one did
        first = next((r for r in history if r["accuracy"] >= target), None)
        reached = first and {"iteration": first["iteration"], "elapsed_seconds": first["elapsed"],
                             "train_seconds": train_seconds if first is last else None}
    summary = Summary(
        name=spec.name, status=Status(status), iterations=state.get("iteration", last.get("iteration", 0)),
        final_accuracy=last.get("accuracy"), final_loss=last.get("loss"),
        best_accuracy=max((r["accuracy"] for r in history), default=None),
        wall_seconds=round(time.time() - started, 3), train_seconds=train_seconds,
        device=setup["device"], workers=setup["workers"], threads=setup["threads"], params=setup["params"],
        restarts=state.get("restarts", 0), resumes=resumes, nodes=setup["nodes"],
        gradient_sync=setup["gradient_sync"], lr_schedule=lr_schedule,
        # what a search should compare: accuracy on held-out training images
        final_val_accuracy=last.get("val_accuracy"),
        best_val_accuracy=max((r["val_accuracy"] for r in history if "val_accuracy" in r), default=None),
        target_accuracy=target, reached_target=reached, error=error or None, validated=bool(spec.data.validation))
    storage.write_bytes(storage.join(run, SUMMARY), (json.dumps(summary.to_dict(), indent=2) + "\n").encode())
    return summary


def _read_yaml_record(cls, where):
    try:
        raw = specs.parse_yaml(_read_text(where), where)
    except specs.SpecError as e:  # malformed YAML: the same words, as a damaged record
        raise Unreadable(str(e)) from None
    return _checked(cls, raw, where)


def write_grid(grid_dir, grid: sweep.Grid) -> None:
    record = GridRecord(grid.name, dataclasses.asdict(grid.tune), grid.repeat, [t.name for t in grid.trials],
                        {t.name: [[k, v] for k, v in t.values] for t in grid.trials})
    storage.write_bytes(storage.join(grid_dir, GRID),
                        yaml.safe_dump(dataclasses.asdict(record), sort_keys=False).encode())


def read_grid(grid_dir) -> sweep.Grid:
    """A grid's directory as a Grid again: its trials' specs from their own config.yaml."""
    where = storage.join(grid_dir, GRID)
    record = _read_yaml_record(GridRecord, where)
    tune = _section(sweep.TuneSpec, record.tune, "tune", where)
    trials = []
    for name in record.trials:
        run = storage.join(grid_dir, str(name))
        if not isinstance(name, str) or not storage.exists(storage.join(run, CONFIG)):
            raise Unreadable(f"{where}: names trial {specs.show(name)}, but {run} holds no {CONFIG}")
        pairs = record.values.get(name)
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise Unreadable(f"{where}: values: {specs.show(name)}: expected [key, value] pairs, got "
                             f"{specs.show(pairs)}")
        trials.append(sweep.Trial(name, read_config(run), tuple((k, v) for k, v in pairs)))
    if not trials:
        raise Unreadable(f"{where}: trials: expected the names of the grid's trials, got none")
    return sweep.Grid(record.name, tuple(trials), tune, str(grid_dir), repeat=record.repeat)


def _section(cls, raw: dict, path: str, where):
    try:
        return specs.section(cls, raw, path, where)
    except specs.SpecError as e:
        raise Unreadable(str(e)) from None


def write_search(search_dir, search: sweep.Search) -> None:
    record = SearchRecord(search.name, dataclasses.asdict(search.search), search.repeat,
                          dataclasses.asdict(search.tune),
                          {key: {kind: list(args)} for key, kind, args in search.space}, search.base)
    storage.write_bytes(storage.join(search_dir, SEARCH),
                        yaml.safe_dump(dataclasses.asdict(record), sort_keys=False).encode())


def read_search(search_dir) -> sweep.Search:
    """A search's directory as a Search again, from its search.yaml (for `rnnjob resume`)."""
    where = storage.join(search_dir, SEARCH)
    record = _read_yaml_record(SearchRecord, where)
    space = []
    for key, distribution in record.space.items():
        if not isinstance(distribution, dict) or len(distribution) != 1:
            raise Unreadable(f"{where}: space: {specs.show(key)}: expected {{distribution: [arguments]}}, got "
                             f"{specs.show(distribution)}")
        ((kind, args),) = distribution.items()
        try:
            space.append(sweep.distribution(key, {kind: args}, where))
        except specs.SpecError as e:
            raise Unreadable(str(e)) from None
    try:
        base = specs.from_dict({**record.base, "name": record.name}, where)
    except specs.SpecError as e:
        raise Unreadable(str(e)) from None
    return sweep.Search(record.name, record.base, tuple(space), _section(sweep.SearchSpec, record.search, "search",
                                                                         where),
                        _section(sweep.TuneSpec, record.tune, "tune", where), record.repeat, base.output.location)


def judged_on(location) -> Optional[str]:
    """The tune.metric a grid's or search's directory was judged on (its grid.yaml or search.yaml);
    None for any other folder, or a record that cannot be read."""
    for name, cls in ((GRID, GridRecord), (SEARCH, SearchRecord)):
        where = storage.join(location, name)
        if not storage.exists(where):
            continue
        try:
            metric = _read_yaml_record(cls, where).tune.get("metric")
        except Unreadable:
            return None
        return metric if isinstance(metric, str) else None
    return None


def is_grid(location) -> bool:
    return storage.exists(storage.join(location, GRID))


def is_search(location) -> bool:
    return storage.exists(storage.join(location, SEARCH))


def read_summary(run) -> Summary:
    where = storage.join(run, SUMMARY)
    return Summary.from_dict(_read_json(where), where)


def write_submission(output, location) -> None:
    """Where the run (or grid or search) of the Jobs API job this process drives went, by the job's id, below
    its output folder: `rnnjob watch ID` finds it there. Nothing outside such a job."""
    job_id = os.environ.get(SUBMISSION_ENV)
    if job_id:
        if not storage.is_uri(output):  # an object store has no folders to make
            Path(output, SUBMISSIONS).mkdir(parents=True, exist_ok=True)
        storage.write_bytes(storage.join(output, SUBMISSIONS, f"{job_id}.json"),
                            json.dumps({"run": str(location)}).encode())


def read_submission(output, job_id: str) -> Optional[str]:
    """The run directory a Jobs API job recorded below its output folder, or None where there is no readable
    record (the job has not made it yet, or this machine does not reach the folder)."""
    try:
        run = json.loads(storage.read_bytes(storage.join(output, SUBMISSIONS, f"{job_id}.json"))).get("run")
    except (OSError, ValueError, AttributeError):
        return None
    return run if isinstance(run, str) else None


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
    import torch  # here, not at the top: the commands that only read records start without it

    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    storage.write_bytes(storage.join(run, MODEL), buf.getvalue())


def load_model(path) -> dict:
    """The state in a model.pt (a file location, or a run directory holding one)."""
    if storage.is_dir(path):
        path = storage.join(path, MODEL)
    try:
        data = storage.read_bytes(path)
    except IsADirectoryError:
        raise Unreadable(f"{path}: is a folder, not a model file") from None
    except OSError as e:
        raise Unreadable(f"{path}: cannot read: {e.strerror or str(e).splitlines()[0]}") from None
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # empty, cut short, another format, objects beyond weights: torch raises several kinds
        why = "empty" if not data else "torch cannot load it as plain tensors and numbers"
        raise Unreadable(f"{path}: not an rnnjob model file ({why})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise Unreadable(f"{path}: not an rnnjob model file")
    kinds = {"spec": dict, "model": dict, "optimizer": dict, "iteration": int, "history": list}
    wrong = [key for key, kind in kinds.items() if not isinstance(state.get(key), kind)]
    if wrong:
        raise Unreadable(f"{path}: an rnnjob model file without a valid {wrong[0]}")
    return state
