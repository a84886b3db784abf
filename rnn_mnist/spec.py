"""Job specs: YAML files loaded into frozen dataclasses, checked field by field. (Grids and searches, which
expand a job file into trials or a sample space, are `sweep`'s.)

Every error names where the bad value came from (a file, or a --set override)
and the dotted field, in one line: `jobs/x.yaml: train.lr: expected a positive
number, got 'fast'`.
"""

import copy
import dataclasses
import math
import os
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from . import storage
from .errors import BadInput


class SpecError(BadInput):
    """A job spec that cannot be used; the message is meant for the user as is."""


MAX_FILE_BYTES = 1 << 20  # a job file is a few hundred bytes; anything this large is a mistake
SEED_LIMIT = 2**32  # numpy's and most tools' seed range; torch's generators overflow near 2**64


def up_to(limit):
    """A positive number (finite) at most `limit`."""
    return lambda v: 0 < v <= limit and math.isfinite(v)


def _positive(v):
    return v > 0 and math.isfinite(v)


_quote = reprlib.Repr()  # bounded work and length, however large or deep a value is (keywords: Python 3.12+)
_quote.maxstring, _quote.maxother, _quote.maxlevel = 60, 60, 2
_quote.maxlist = _quote.maxdict = _quote.maxtuple = _quote.maxset = 4


def show(value) -> str:
    """A bad value as an error line quotes it: at most about 80 characters, however large or deep it is."""
    text = _quote.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _meta(help, check=None, rule=None, choices=None):
    return {"help": help, "check": check, "rule": rule, "choices": choices}


def option(default, help, **kw):
    return field(default=default, metadata=_meta(help, **kw))


@dataclass(frozen=True)
class ModelSpec:
    cell: str = option("rnn", "recurrent cell", choices=("rnn", "lstm", "gru"))
    nonlinearity: str = option("tanh", "rnn cell only: relu or tanh", choices=("relu", "tanh"))
    hidden_dim: int = option(100, "units per recurrent layer", check=up_to(4096), rule="an integer from 1 to 4096")
    layer_dim: int = option(1, "stacked recurrent layers", check=up_to(16), rule="an integer from 1 to 16")
    # the same parameters either way; the kernel changes float rounding and speed only
    kernel: str = option("auto", "auto: rnnjob's CPU kernel for the rnn cell on a CPU (rnn_mnist/kernels), "
                       "else torch's; torch: torch's own layers everywhere", choices=("auto", "torch"))


@dataclass(frozen=True)
class TrainSpec:
    batch_size: int = option(100, "global batch, split across workers", check=up_to(60_000),
                           rule="an integer from 1 to 60000 (the training set)")
    iters: int = option(3000, "optimizer steps in all", check=up_to(10**8), rule="an integer from 1 to 100000000")
    lr: float = option(0.01, "learning rate", check=_positive, rule="a positive number")
    optimizer: str = option("sgd", "sgd or adam", choices=("sgd", "adam"))
    momentum: float = option(0.0, "sgd momentum", check=lambda v: 0 <= v < 1, rule="a number in [0, 1)")
    lr_decay: str = option("none", "none, or cosine: lr falls to 0 over the iterations", choices=("none", "cosine"))
    eval_every: int = option(500, "test-set evaluation period, iterations", check=up_to(10**8),
                           rule="an integer from 1 to 100000000")
    seed: int = option(0, "seeds weights and data order", check=lambda v: 0 <= v < SEED_LIMIT,
                     rule="an integer from 0 to 4294967295")
    # exploding gradients are the plain rnn's classic failure; clipping is off by default like the seed
    grad_clip: Optional[float] = option(None, "max gradient norm, or null", check=_positive,
                                      rule="a positive number or null")
    # time to accuracy (MLPerf's way): the run ends at the first evaluation that reaches it
    target_accuracy: Optional[float] = option(None, "stop at the first test evaluation at or above this accuracy "
                                            "(%), or null", check=up_to(100), rule="a number in (0, 100], or null")


@dataclass(frozen=True)
class DataSpec:
    root: str = option("data", "folder holding MNIST/raw (torchvision's layout)")
    # choosing by the test set tunes to it: a search compares configurations on held-out training images
    validation: int = option(0, "the last N training images, held out of training; their accuracy is measured at "
                           "each evaluation (val_accuracy)", check=lambda v: 0 <= v <= 30_000,
                           rule="an integer from 0 to 30000")


@dataclass(frozen=True)
class ScalingSpec:
    workers: int = option(1, "training processes (Ray workers)", check=up_to(1024), rule="an integer from 1 to 1024")
    gpu: bool = option(False, "one GPU per worker")
    max_failures: int = option(2, "worker failures survived by restarting from the last checkpoint",
                             check=lambda v: 0 <= v <= 100, rule="an integer from 0 to 100")
    # null: a job on its own shares the cluster's CPUs among its workers; a grid's trials take 1 each
    cpus_per_worker: Optional[int] = option(None, "CPUs (and torch threads) per worker, or null",
                                          check=up_to(1024), rule="an integer from 1 to 1024, or null")


@dataclass(frozen=True)
class OutputSpec:
    dir: str = option("runs", "run directories go below this folder")
    storage: Optional[str] = option(None, "instead of dir: a shared folder or a URI (s3://, gs://) that every node "
                                  "and the driver reach; required on a cluster of several nodes")

    @property
    def location(self) -> str:
        return self.storage or self.dir


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+-]{0,99}")


@dataclass(frozen=True)
class JobSpec:
    name: str = option("job", "run directory name", check=lambda v: bool(_NAME.fullmatch(v)),
                     rule="up to 100 letters, digits and . _ = , + - (not starting with a symbol)")
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    output: OutputSpec = field(default_factory=OutputSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _type_name(t) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[t]


def _coerce(value, ftype, rule, where):
    """Check one leaf value's type; ints are accepted where numbers are expected."""
    optional = getattr(ftype, "__origin__", None) is not None  # Optional[X]
    base = ftype.__args__[0] if optional else ftype
    if value is None and optional:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise SpecError(f"{where}: expected {rule or _type_name(base)}, got {show(value)}")


def section(cls, raw, path, source):
    """The dataclass `cls` (a spec or one of its sections) from a mapping, checked field by field; an error
    names `source: path.field`."""
    if not isinstance(raw, dict):
        where = f"{source}: {path}" if path else source
        raise SpecError(f"{where}: expected a mapping of fields, got {show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            dotted = f"{path}.{key}" if path else str(key)
            known = ", ".join(fields)
            raise SpecError(f"{source}: {dotted}: unknown field (known: {known})")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        dotted = f"{path}.{name}" if path else name
        where = f"{source}: {dotted}"
        if dataclasses.is_dataclass(f.type):
            values[name] = section(f.type, raw[name], dotted, source)
            continue
        meta = f.metadata
        value = _coerce(raw[name], f.type, meta.get("rule"), where)
        if meta.get("choices") and value not in meta["choices"]:
            raise SpecError(f"{where}: expected one of {', '.join(meta['choices'])}, got {show(value)}")
        if value is not None and meta.get("check") and not meta["check"](value):
            raise SpecError(f"{where}: expected {meta['rule']}, got {show(value)}")
        values[name] = value
    return cls(**values)


def _cross_check(spec: JobSpec, source: str) -> None:
    for dotted, place, uri_allowed in (("data.root", spec.data.root, False), ("output.dir", spec.output.dir, False),
                                       ("output.storage", spec.output.storage, True)):
        if place is None:
            continue
        if not place.strip() or "\0" in place:
            raise SpecError(f"{source}: {dotted}: expected a folder, got {show(place)}")
        if storage.is_uri(place) and not uri_allowed:
            raise SpecError(f"{source}: {dotted}: {show(place)} is a URI; {dotted} is a local folder"
                            + (" (a shared one or a URI goes in output.storage)" if dotted == "output.dir" else ""))
        wrong = storage.problem(place)
        if wrong:
            raise SpecError(f"{source}: {dotted}: {wrong}")
    left = 60_000 - spec.data.validation
    if spec.train.batch_size > left:
        raise SpecError(f"{source}: train.batch_size: {spec.train.batch_size} is more than the {left} training images "
                        f"that data.validation ({spec.data.validation}) leaves")
    if spec.model.cell != "rnn" and spec.model.nonlinearity != "tanh":
        raise SpecError(f"{source}: model.nonlinearity: {spec.model.nonlinearity!r} applies to the rnn cell only,"
                        f" not {spec.model.cell!r} (leave it out or set tanh)")


def from_dict(raw: dict, source: str = "<spec>") -> JobSpec:
    spec = section(JobSpec, raw, "", source)
    _cross_check(spec, source)
    return spec


def read_yaml(path: Path) -> dict:
    """The raw mapping in a spec file, or a SpecError naming the file."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(f"{path}: {size} bytes; a job file holds at most {MAX_FILE_BYTES} bytes")
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a job file") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    raw = parse_yaml(text, path)
    raw.setdefault("name", Path(path).stem)
    return raw


class _Duplicate(yaml.constructor.ConstructorError):
    pass


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise _Duplicate(None, None, f"{show(key)} is given twice (the second would silently win)",
                                 key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, path) -> dict:
    try:
        raw = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if isinstance(e, _Duplicate):
            raise SpecError(f"{path}: {line}{problem}") from None
        raise SpecError(f"{path}: {line}malformed YAML: {show(problem)[1:-1]}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a job spec") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return raw


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=0.05` -> ("train.lr", 0.05); the value is read as YAML, and a number in any of
    Python's spellings (1e-3, which YAML 1.1 reads as a string) is a number."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {show(text)[1:-1]}: expected dotted.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except (yaml.YAMLError, RecursionError):
        parsed = value
    if isinstance(parsed, str) and _NUMBER.fullmatch(parsed.strip()):
        parsed = float(parsed)
    return key.strip(), parsed


def set_dotted(raw: dict, key: str, value, where: str) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"{where}: {part} is not a section")
        node = child
    node[leaf] = value


def apply_overrides(raw: dict, overrides) -> dict:
    """raw with each override set: `dotted.key=value` text (--set, read as YAML), or a (dotted key,
    value) pair taken as it is (the dedicated flags: --out 2024-01-01 is a folder, not a date)."""
    raw = copy.deepcopy(raw)
    for override in overrides:
        if isinstance(override, tuple):
            key, value = override
            where = f"--set {key}"
        else:
            key, value = parse_override(override)
            where = f"--set {show(override)[1:-1]}"
        set_dotted(raw, key, value, where)
    return raw


def load(path: Path, overrides: list[str] = (), raw: Optional[dict] = None) -> JobSpec:
    """Read, override and check one job file (raw: its mapping, if read already)."""
    raw = read_yaml(path) if raw is None else raw
    if overrides:
        # validate the file alone first, so an error in it is blamed on the file
        from_dict(raw, str(path))
        raw = apply_overrides(raw, list(overrides))
        return from_dict(raw, f"{path} (with --set)")
    return from_dict(raw, str(path))


HOME_ENV = "RNNJOB_HOME"  # where relative data and output paths start; default: the working folder


def resolved_at(spec: JobSpec, base: Path) -> JobSpec:
    def at(place):
        if place is None or storage.is_uri(place):
            return place
        return str((base / Path(place).expanduser()).resolve())

    return dataclasses.replace(
        spec, data=dataclasses.replace(spec.data, root=at(spec.data.root)),
        output=dataclasses.replace(spec.output, dir=at(spec.output.dir), storage=at(spec.output.storage)))


def resolved(spec: JobSpec) -> JobSpec:
    """The spec with absolute data and output paths, taken from $RNNJOB_HOME or else the working folder: the
    one place relative paths are read, so that no Ray worker (which runs in a folder of Ray's), nor a later
    `rnnjob resume` from elsewhere, depends on where it runs. (Grids and searches: sweep.resolved.)"""
    return resolved_at(spec, home())


def home() -> Path:
    """Where relative data and output paths start."""
    return Path(os.environ.get(HOME_ENV) or ".").expanduser()


def dump(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
