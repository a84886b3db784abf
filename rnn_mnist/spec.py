"""Job specs: YAML files loaded into frozen dataclasses, checked field by field.

Every error names where the bad value came from (a file, or a --set override)
and the dotted field, in one line: `jobs/x.yaml: train.lr: expected a positive
number, got 'fast'`.
"""

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import BadInput


class SpecError(BadInput):
    """A job spec that cannot be used; the message is meant for the user as is."""


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _meta(help, check=None, rule=None, choices=None):
    return {"help": help, "check": check, "rule": rule, "choices": choices}


def _opt(default, help, **kw):
    return field(default=default, metadata=_meta(help, **kw))


@dataclass(frozen=True)
class ModelSpec:
    cell: str = _opt("rnn", "recurrent cell", choices=("rnn", "lstm", "gru"))
    nonlinearity: str = _opt("tanh", "rnn cell only: relu or tanh", choices=("relu", "tanh"))
    hidden_dim: int = _opt(100, "units per recurrent layer", check=_positive, rule="a positive integer")
    layer_dim: int = _opt(1, "stacked recurrent layers", check=_positive, rule="a positive integer")


@dataclass(frozen=True)
class TrainSpec:
    batch_size: int = _opt(100, "global batch, split across workers", check=_positive, rule="a positive integer")
    iters: int = _opt(3000, "optimizer steps in all", check=_positive, rule="a positive integer")
    lr: float = _opt(0.01, "learning rate", check=_positive, rule="a positive number")
    optimizer: str = _opt("sgd", "sgd or adam", choices=("sgd", "adam"))
    momentum: float = _opt(0.0, "sgd momentum", check=lambda v: 0 <= v < 1, rule="a number in [0, 1)")
    eval_every: int = _opt(500, "test-set evaluation period, iterations", check=_positive, rule="a positive integer")
    seed: int = _opt(0, "seeds weights and data order", check=_non_negative, rule="a non-negative integer")
    # exploding gradients are the plain rnn's classic failure; clipping is off by default like the seed
    grad_clip: Optional[float] = _opt(None, "max gradient norm, or null", check=_positive, rule="a positive number or null")


@dataclass(frozen=True)
class DataSpec:
    root: str = _opt("data", "folder holding MNIST/raw (torchvision's layout)")


@dataclass(frozen=True)
class ScalingSpec:
    workers: int = _opt(1, "training processes (Ray workers)", check=_positive, rule="a positive integer")
    gpu: bool = _opt(False, "one GPU per worker")
    max_failures: int = _opt(2, "worker failures survived by restarting from the last checkpoint",
                             check=_non_negative, rule="a non-negative integer")


@dataclass(frozen=True)
class OutputSpec:
    dir: str = _opt("runs", "run directories go below this folder")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


@dataclass(frozen=True)
class JobSpec:
    name: str = _opt("job", "run directory name", check=lambda v: bool(_NAME.match(v)),
                     rule="letters, digits and . _ = , + - (not starting with a symbol)")
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    output: OutputSpec = field(default_factory=OutputSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **sections) -> "JobSpec":
        return dataclasses.replace(self, **sections)


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
    raise SpecError(f"{where}: expected {rule or _type_name(base)}, got {value!r}")


def _build(cls, raw, path, source):
    if not isinstance(raw, dict):
        where = f"{source}: {path}" if path else source
        raise SpecError(f"{where}: expected a mapping of fields, got {raw!r}")
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
            values[name] = _build(f.type, raw[name], dotted, source)
            continue
        meta = f.metadata
        value = _coerce(raw[name], f.type, meta.get("rule"), where)
        if meta.get("choices") and value not in meta["choices"]:
            raise SpecError(f"{where}: expected one of {', '.join(meta['choices'])}, got {value!r}")
        if value is not None and meta.get("check") and not meta["check"](value):
            raise SpecError(f"{where}: expected {meta['rule']}, got {value!r}")
        values[name] = value
    return cls(**values)


def _cross_check(spec: JobSpec, source: str) -> None:
    if spec.model.cell != "rnn" and spec.model.nonlinearity != "tanh":
        raise SpecError(f"{source}: model.nonlinearity: {spec.model.nonlinearity!r} applies to the rnn cell only,"
                        f" not {spec.model.cell!r} (leave it out or set tanh)")


def from_dict(raw: dict, source: str = "<spec>") -> JobSpec:
    spec = _build(JobSpec, raw, "", source)
    _cross_check(spec, source)
    return spec


def read_yaml(path: Path) -> dict:
    """The raw mapping in a spec file, or a SpecError naming the file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a job file") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}: {line}malformed YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    raw.setdefault("name", Path(path).stem)
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=0.05` -> ("train.lr", 0.05); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {text}: expected dotted.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"--set {text}: {part} is not a section")
            node = child
        node[leaf] = value
    return raw


def load(path: Path, overrides: list[str] = ()) -> JobSpec:
    """Read, override and check one job file."""
    raw = read_yaml(path)
    if overrides:
        # validate the file alone first, so an error in it is blamed on the file
        from_dict(raw, str(path))
        raw = apply_overrides(raw, list(overrides))
        return from_dict(raw, f"{path} (with --set)")
    return from_dict(raw, str(path))


def dump(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
