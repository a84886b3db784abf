"""Job specs: YAML files loaded into frozen dataclasses, checked field by field.

Every error names where the bad value came from (a file, or a --set override)
and the dotted field, in one line: `jobs/x.yaml: train.lr: expected a positive
number, got 'fast'`.
"""

import copy
import dataclasses
import itertools
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
MAX_TRIALS = 1000  # a grid's product; more is a typo, or wants a sampled search
SEED_LIMIT = 2**32  # numpy's and most tools' seed range; torch's generators overflow near 2**64


def _up_to(limit):
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


def _opt(default, help, **kw):
    return field(default=default, metadata=_meta(help, **kw))


@dataclass(frozen=True)
class ModelSpec:
    cell: str = _opt("rnn", "recurrent cell", choices=("rnn", "lstm", "gru"))
    nonlinearity: str = _opt("tanh", "rnn cell only: relu or tanh", choices=("relu", "tanh"))
    hidden_dim: int = _opt(100, "units per recurrent layer", check=_up_to(4096), rule="an integer from 1 to 4096")
    layer_dim: int = _opt(1, "stacked recurrent layers", check=_up_to(16), rule="an integer from 1 to 16")
    # the same parameters either way; the kernel changes float rounding and speed only
    kernel: str = _opt("auto", "auto: rnnjob's CPU kernel for the rnn cell on a CPU (rnn_mnist/kernels), "
                       "else torch's; torch: torch's own layers everywhere", choices=("auto", "torch"))


@dataclass(frozen=True)
class TrainSpec:
    batch_size: int = _opt(100, "global batch, split across workers", check=_up_to(60_000),
                           rule="an integer from 1 to 60000 (the training set)")
    iters: int = _opt(3000, "optimizer steps in all", check=_up_to(10**8), rule="an integer from 1 to 100000000")
    lr: float = _opt(0.01, "learning rate", check=_positive, rule="a positive number")
    optimizer: str = _opt("sgd", "sgd or adam", choices=("sgd", "adam"))
    momentum: float = _opt(0.0, "sgd momentum", check=lambda v: 0 <= v < 1, rule="a number in [0, 1)")
    lr_decay: str = _opt("none", "none, or cosine: lr falls to 0 over the iterations", choices=("none", "cosine"))
    eval_every: int = _opt(500, "test-set evaluation period, iterations", check=_up_to(10**8),
                           rule="an integer from 1 to 100000000")
    seed: int = _opt(0, "seeds weights and data order", check=lambda v: 0 <= v < SEED_LIMIT,
                     rule="an integer from 0 to 4294967295")
    # exploding gradients are the plain rnn's classic failure; clipping is off by default like the seed
    grad_clip: Optional[float] = _opt(None, "max gradient norm, or null", check=_positive,
                                      rule="a positive number or null")
    # time to accuracy (MLPerf's way): the run ends at the first evaluation that reaches it
    target_accuracy: Optional[float] = _opt(None, "stop at the first test evaluation at or above this accuracy "
                                            "(%), or null", check=_up_to(100), rule="a number in (0, 100], or null")


@dataclass(frozen=True)
class DataSpec:
    root: str = _opt("data", "folder holding MNIST/raw (torchvision's layout)")
    # choosing by the test set tunes to it: a search compares configurations on held-out training images
    validation: int = _opt(0, "the last N training images, held out of training; their accuracy is measured at "
                           "each evaluation (val_accuracy)", check=lambda v: 0 <= v <= 30_000,
                           rule="an integer from 0 to 30000")


@dataclass(frozen=True)
class ScalingSpec:
    workers: int = _opt(1, "training processes (Ray workers)", check=_up_to(1024), rule="an integer from 1 to 1024")
    gpu: bool = _opt(False, "one GPU per worker")
    max_failures: int = _opt(2, "worker failures survived by restarting from the last checkpoint",
                             check=lambda v: 0 <= v <= 100, rule="an integer from 0 to 100")
    # null: a job on its own shares the cluster's CPUs among its workers; a grid's trials take 1 each
    cpus_per_worker: Optional[int] = _opt(None, "CPUs (and torch threads) per worker, or null",
                                          check=_up_to(1024), rule="an integer from 1 to 1024, or null")


@dataclass(frozen=True)
class OutputSpec:
    dir: str = _opt("runs", "run directories go below this folder")
    storage: Optional[str] = _opt(None, "instead of dir: a shared folder or a URI (s3://, gs://) that every node "
                                  "and the driver reach; required on a cluster of several nodes")

    @property
    def location(self) -> str:
        return self.storage or self.dir


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+-]{0,99}")


@dataclass(frozen=True)
class JobSpec:
    name: str = _opt("job", "run directory name", check=lambda v: bool(_NAME.fullmatch(v)),
                     rule="up to 100 letters, digits and . _ = , + - (not starting with a symbol)")
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    output: OutputSpec = field(default_factory=OutputSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TuneSpec:
    """How a grid runs on Ray Tune (the `tune:` section of a grid file)."""

    scheduler: str = _opt("none", "none, or asha: stop trials early that trail the others", choices=("none", "asha"))
    metric: str = _opt("accuracy", "what asha compares (val_accuracy: needs data.validation)",
                       choices=("accuracy", "loss", "val_accuracy"))
    mode: str = _opt("max", "whether the metric should be high or low", choices=("max", "min"))
    grace_period: int = _opt(2, "evaluations every trial gets before asha may stop it",
                             check=_up_to(10**6), rule="an integer from 1 to 1000000")
    max_concurrent: Optional[int] = _opt(None, "trials at once; null: as many as the cluster holds",
                                         check=_up_to(1024), rule="an integer from 1 to 1024, or null")


@dataclass(frozen=True)
class SearchSpec:
    """How a search samples (the `search:` section; its `space:` holds the distributions)."""

    algorithm: str = _opt("random", "random: Ray Tune's random sampling; optuna: Ray Tune's OptunaSearch, each "
                          "sample chosen from how the finished ones did", choices=("random", "optuna"))
    num_samples: int = _opt(8, "configurations to sample", check=_up_to(MAX_TRIALS),
                            rule=f"an integer from 1 to {MAX_TRIALS}")


DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")  # Ray Tune's: tune.choice, tune.uniform, ...
MAX_REPEAT = 100


@dataclass(frozen=True)
class Search:
    """A job file with a `search:` section: num_samples configurations drawn from its space, each run
    `repeat` times at seeds seed, seed + 1, ..."""

    name: str
    base: dict  # the job's own fields, checked: what every sample starts from
    space: tuple  # (dotted key, distribution, its arguments) per sampled field
    search: SearchSpec
    tune: TuneSpec
    repeat: int
    output_dir: str

    def sample(self, values: dict, name: str, seed_offset: int = 0) -> JobSpec:
        """The job spec of one sample: the base with the sampled values, the seed moved by seed_offset."""
        raw = copy.deepcopy(self.base)
        for key, value in values.items():
            set_dotted(raw, key, value, f"{self.name}: sample {name}")
        raw["name"] = name
        raw.setdefault("train", {})["seed"] = raw["train"].get("seed", 0) + seed_offset
        return from_dict(raw, f"{self.name}: sample {name}")


@dataclass(frozen=True)
class Trial:
    name: str  # its values, e.g. lr=0.1,layer_dim=2; also its run directory's name
    spec: JobSpec
    values: tuple = ()  # (dotted key, value) pairs that this trial sets: its hyperparameters


@dataclass(frozen=True)
class Grid:
    """A job file with a `grid:` section: the cartesian product of its values, one trial each (with
    `repeat: K`, K trials each: `<combination>/seed=S`)."""

    name: str
    trials: tuple
    tune: TuneSpec
    output_dir: str
    presets: tuple = ()  # the job files that `preset:` names (Paths beside the grid file)
    repeat: int = 1  # seeds per combination: len(trials) is the combinations times this


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


# fields an older rnnjob wrote into run directories: still read, and ignored
RETIRED = {"scaling.local_sync"}


def _build(cls, raw, path, source):
    if not isinstance(raw, dict):
        where = f"{source}: {path}" if path else source
        raise SpecError(f"{where}: expected a mapping of fields, got {show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    raw = {k: v for k, v in raw.items() if f"{path}.{k}" not in RETIRED}
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
    spec = _build(JobSpec, raw, "", source)
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


def parse_yaml(text: str, path) -> dict:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
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


def load_any(path: Path, overrides: list[str] = ()):
    """A JobSpec, a Grid for a file with a `grid:` section, or a Search for one with `search:`."""
    raw = read_yaml(path)
    if "search" in raw:
        if "grid" in raw:
            raise SpecError(f"{path}: grid and search: a job file has one or the other")
        return load_search(path, overrides, raw)
    if "repeat" in raw and "grid" not in raw:
        raise SpecError(f"{path}: repeat: applies to a grid or a search (a `grid:` or `search:` section)")
    return (load_grid if "grid" in raw or "tune" in raw else load)(path, overrides, raw)


def _repeat(raw: dict, source: str) -> int:
    """A grid's or search's `repeat:` (taken out of raw): the seeds each configuration runs at."""
    repeat = raw.pop("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= MAX_REPEAT:
        raise SpecError(f"{source}: repeat: expected an integer from 1 to {MAX_REPEAT}, got {show(repeat)}")
    return repeat


_UNSAMPLED = ("name", "output", "scaling", "data.root")  # where runs go and what they run on: the same for all


def _distribution(key, value, source: str) -> tuple:
    """(key, distribution, arguments) of one `search.space` entry, or a SpecError naming the key."""
    if not isinstance(key, str) or not _GRID_KEY.fullmatch(key) or key == "preset":
        raise SpecError(f"{source}: search.space: {show(key)} is not a dotted field (like train.lr)")
    where = f"{source}: search.space.{key}"
    if key.startswith(_UNSAMPLED):
        raise SpecError(f"{where}: cannot be sampled (every sample runs alike and lands in the search's directory)")
    shapes = "{choice: [a, b, ...]}, {uniform: [low, high]}, {loguniform: [low, high]} or {randint: [low, high]}"
    if not isinstance(value, dict) or len(value) != 1:
        raise SpecError(f"{where}: expected one of {shapes}, got {show(value)}")
    ((kind, args),) = value.items()
    if kind not in DISTRIBUTIONS:
        raise SpecError(f"{where}: unknown distribution {show(kind)} (known: {', '.join(DISTRIBUTIONS)})")
    if kind == "choice":
        if not isinstance(args, list) or not args or len(args) > MAX_TRIALS:
            raise SpecError(f"{where}: choice: expected a list of 1 to {MAX_TRIALS} values, got {show(args)}")
        return key, kind, tuple(args)
    number = (int,) if kind == "randint" else (int, float)
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(a, number) and not isinstance(a, bool) and math.isfinite(a) for a in args)):
        what = "integers" if kind == "randint" else "numbers"
        raise SpecError(f"{where}: {kind}: expected [low, high], two {what}, got {show(args)}")
    low, high = args
    if not low < high:
        raise SpecError(f"{where}: {kind}: expected low < high, got {show(args)}")
    if kind == "loguniform" and low <= 0:
        raise SpecError(f"{where}: loguniform: expected a positive low bound, got {show(low)}")
    return key, kind, (low, high)


def extremes(kind: str, args: tuple) -> tuple:
    """The values a distribution can reach at its ends (a randint's high bound is excluded, as Tune's)."""
    if kind == "choice":
        return args
    if kind == "randint":
        return args[0], args[1] - 1
    return float(args[0]), float(args[1])  # sampled as floats: an integer field refuses them here


def load_search(path: Path, overrides: list[str] = (), raw: Optional[dict] = None) -> Search:
    """Read a search file and check every distribution at its ends before anything runs."""
    source = str(path)
    raw = read_yaml(path) if raw is None else raw
    section, tune, repeat = raw.pop("search"), raw.pop("tune", None) or {}, _repeat(raw, source)
    if not isinstance(section, dict):
        raise SpecError(f"{source}: search: expected a mapping (algorithm, num_samples, space), got {show(section)}")
    settings = {k: v for k, v in section.items() if k != "space"}
    search_spec = _build(SearchSpec, settings, "search", source)
    tune_spec = _build(TuneSpec, tune, "tune", source)
    from_dict(raw, source)  # the search's own fields, blamed on the file
    if overrides:
        raw = apply_overrides(raw, list(overrides))
        from_dict(raw, f"{source} (with --set)")
    space_raw = section.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise SpecError(f"{source}: search.space: expected a mapping of dotted fields to distributions, "
                        f"got {show(space_raw)}")
    space = tuple(_distribution(key, value, source) for key, value in space_raw.items())
    for key, kind, args in space:
        for value in extremes(kind, args):
            where = f"{source}: search.space.{key} ({kind} reaches {show(value)})"
            trial_raw = copy.deepcopy(raw)
            set_dotted(trial_raw, key, value, where)
            from_dict(trial_raw, where)
    ends = [[(key, value) for value in extremes(kind, args)] for key, kind, args in space]
    if math.prod(len(e) for e in ends) <= 4096:  # and together: fields that constrain each other (lstm and relu)
        for combo in itertools.product(*ends):
            where = f"{source}: search.space at " + ", ".join(f"{k}={show(v)}" for k, v in combo)
            trial_raw = copy.deepcopy(raw)
            for key, value in combo:
                set_dotted(trial_raw, key, value, where)
            from_dict(trial_raw, where)
    keys = {key for key, _, _ in space}
    if tune_spec.scheduler == "asha":
        if repeat > 1:
            raise SpecError(f"{source}: repeat: asha compares samples while they train, and a sample's seeds run one "
                            "after another; use repeat with scheduler none")
        if keys & {"train.iters", "train.eval_every"}:
            raise SpecError(f"{source}: search.space: train.iters and train.eval_every cannot be sampled with asha "
                            "(its rungs count evaluations)")
    base = from_dict(raw, source)
    if tune_spec.metric == "val_accuracy" and not base.data.validation and "data.validation" not in keys:
        raise SpecError(f"{source}: tune.metric: val_accuracy needs data.validation (held-out training images)")
    body = {k: v for k, v in raw.items() if k != "name"}
    return Search(base.name, body, space, search_spec, tune_spec, repeat, base.output.location)


def _format_value(value) -> str:
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).split("\n")[0]  # true, false, null
    return repr(value) if isinstance(value, float) else str(value)


def trial_name(combo) -> str:
    """`lr=0.1,layer_dim=2`: the last part of each key, unless two keys share it; a preset by its own name."""
    shorts = [key.rsplit(".", 1)[-1] for key, _ in combo]
    parts = []
    for (key, value), short in zip(combo, shorts):
        label = key if shorts.count(short) > 1 else short
        parts.append(str(value) if key == "preset" else f"{label}={_format_value(value)}")
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts))


def _preset_path(grid_file: Path, name, where: str) -> Path:
    """The job file that `preset: [name]` means: beside the grid file, and nowhere else."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise SpecError(f"{where}: expected the name of a job file beside the grid file, got {show(name)}")
    return Path(grid_file).parent / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")


def _preset(grid_file: Path, name, where: str) -> dict:
    """The raw spec of a job file swept by `preset:`, found beside the grid file."""
    path = _preset_path(grid_file, name, where)
    if not path.exists():
        raise SpecError(f"{where}: no job file {path}")
    raw = read_yaml(path)
    if "grid" in raw or "tune" in raw:
        raise SpecError(f"{where}: {path} is a grid itself")
    return raw


def _merge(base: dict, top: dict) -> dict:
    """base with top's fields on top of it, section by section."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _trial_raw(raw: dict, combo, grid_file: Path, where: str) -> dict:
    values = dict(combo)
    out = copy.deepcopy(raw)
    if "preset" in values:  # the preset's file first, then what the grid file itself says
        mine = {k: v for k, v in raw.items() if k != "name"}
        out = _merge(_preset(grid_file, values["preset"], where), mine)
        out["name"] = raw["name"]
    for key, value in combo:
        if key != "preset":
            set_dotted(out, key, value, where)
    return out


_GRID_KEY = re.compile(r"preset|[a-z_]{1,40}(\.[a-z_]{1,40}){0,3}")


def load_grid(path: Path, overrides: list[str] = (), raw: Optional[dict] = None) -> Grid:
    """Read a grid file and check every value, then every trial, before anything runs."""
    source = str(path)
    raw = read_yaml(path) if raw is None else raw
    grid, tune, repeat = raw.pop("grid", None), raw.pop("tune", None) or {}, _repeat(raw, source)
    if not isinstance(grid, dict) or not grid:
        raise SpecError(f"{source}: grid: expected a mapping of dotted keys to lists of values, got {show(grid)}")
    tune_spec = _build(TuneSpec, tune, "tune", source)
    if repeat > 1 and "train.seed" in grid:
        raise SpecError(f"{source}: repeat: the grid sweeps train.seed already; use one or the other")
    from_dict(raw, source)  # the grid's own fields, blamed on the file
    if overrides:
        raw = apply_overrides(raw, list(overrides))
        from_dict(raw, f"{source} (with --set)")
    axes = []
    for key, values in grid.items():
        if not isinstance(key, str) or not _GRID_KEY.fullmatch(key):
            raise SpecError(f"{source}: grid: {show(key)} is not a dotted field (like train.lr) nor preset")
        if key == "name" or key.startswith("output"):
            raise SpecError(f"{source}: grid.{key}: cannot be swept (every trial's directory sits in the grid's)")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{source}: grid.{key}: expected a non-empty list of values, got {show(values)}")
        axes.append([(key, value) for value in values])
    size = math.prod(len(axis) for axis in axes) * repeat
    if size > MAX_TRIALS:
        raise SpecError(f"{source}: grid: {size} trials{' (with repeat)' if repeat > 1 else ''}; "
                        f"a grid runs at most {MAX_TRIALS}")
    for axis in axes:  # each value alone first, so an error names the key and the value
        for key, value in axis:
            where = f"{source}: grid {key}={show(value)}"
            from_dict(_trial_raw(raw, [(key, value)], path, where), where)
    trials = []
    for combo in itertools.product(*axes):
        name = trial_name(combo)
        where = f"{source}: grid trial {name}"
        trial_raw = _trial_raw(raw, combo, path, where)
        trial_raw["name"] = name
        first = from_dict(trial_raw, where)
        if repeat == 1:
            trials.append(Trial(name, first, tuple(combo)))
            continue
        for seed in range(first.train.seed, first.train.seed + repeat):  # <configuration>/seed=S, as a search's
            trial_raw["train"] = {**trial_raw.get("train", {}), "seed": seed}
            trial_raw["name"] = f"{name},seed={seed}"
            trials.append(Trial(f"{name}/seed={seed}", from_dict(trial_raw, f"{where} at seed {seed}"),
                                (*combo, ("train.seed", seed))))
    if len({t.name for t in trials}) < len(trials):
        raise SpecError(f"{source}: grid: two trials would share a name; make the values distinct")
    if tune_spec.metric == "val_accuracy" and any(not t.spec.data.validation for t in trials):
        raise SpecError(f"{source}: tune.metric: val_accuracy needs data.validation (held-out training images) "
                        "in every trial")
    presets = tuple(_preset_path(path, value, source) for value in grid.get("preset", []))
    return Grid(raw["name"], tuple(trials), tune_spec, trials[0].spec.output.location, presets, repeat)


HOME_ENV = "RNNJOB_HOME"  # where relative data and output paths start; default: the working folder


def _resolved_spec(spec: JobSpec, base: Path) -> JobSpec:
    def at(place):
        if place is None or storage.is_uri(place):
            return place
        return str((base / Path(place).expanduser()).resolve())

    return dataclasses.replace(
        spec, data=dataclasses.replace(spec.data, root=at(spec.data.root)),
        output=dataclasses.replace(spec.output, dir=at(spec.output.dir), storage=at(spec.output.storage)))


def resolved(job):
    """The job (a JobSpec, Grid or Search) with absolute data and output paths, taken from $RNNJOB_HOME or
    else the working folder: the one place relative paths are read, so that no Ray worker (which runs
    in a folder of Ray's), nor a later `rnnjob resume` from elsewhere, depends on where it runs."""
    base = Path(os.environ.get(HOME_ENV) or ".").expanduser()
    if isinstance(job, JobSpec):
        return _resolved_spec(job, base)
    if isinstance(job, Search):
        spec = _resolved_spec(from_dict({**job.base, "name": job.name}, job.name), base)
        body = {k: v for k, v in spec.to_dict().items() if k != "name"}
        return dataclasses.replace(job, base=body, output_dir=spec.output.location)
    trials = tuple(dataclasses.replace(t, spec=_resolved_spec(t.spec, base)) for t in job.trials)
    return dataclasses.replace(job, trials=trials, output_dir=trials[0].spec.output.location)


def dump(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
