"""Grids and searches: a job file with a `grid:` section expanded into trials (the cartesian product of its
values, with `repeat`), or with a `search:` section into a space that Ray Tune samples. Each trial and sample is
an ordinary JobSpec (`spec`), checked field by field before anything runs."""

import copy
import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from . import spec as specs
from .spec import JobSpec, SpecError, from_dict, option, read_yaml, set_dotted, show, up_to

MAX_TRIALS = 1000  # a grid's product; more is a typo, or wants a sampled search


@dataclass(frozen=True)
class TuneSpec:
    """How a grid runs on Ray Tune (the `tune:` section of a grid file)."""

    scheduler: str = option("none", "none, or asha: stop trials early that trail the others", choices=("none", "asha"))
    metric: str = option("accuracy", "what asha compares (val_accuracy: needs data.validation)",
                         choices=("accuracy", "loss", "val_accuracy"))
    mode: str = option("max", "whether the metric should be high or low", choices=("max", "min"))
    grace_period: int = option(2, "evaluations every trial gets before asha may stop it",
                               check=up_to(10**6), rule="an integer from 1 to 1000000")
    max_concurrent: Optional[int] = option(None, "trials at once; null: as many as the cluster holds",
                                           check=up_to(1024), rule="an integer from 1 to 1024, or null")


@dataclass(frozen=True)
class SearchSpec:
    """How a search samples (the `search:` section; its `space:` holds the distributions)."""

    algorithm: str = option("random", "random: Ray Tune's random sampling; optuna: Ray Tune's OptunaSearch, each "
                            "sample chosen from how the finished ones did", choices=("random", "optuna"))
    num_samples: int = option(8, "configurations to sample", check=up_to(MAX_TRIALS),
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


def load_any(path: Path, overrides: list[str] = ()):
    """A JobSpec, a Grid for a file with a `grid:` section, or a Search for one with `search:`."""
    raw = read_yaml(path)
    if "search" in raw:
        if "grid" in raw:
            raise SpecError(f"{path}: grid and search: a job file has one or the other")
        return load_search(path, overrides, raw)
    if "repeat" in raw and "grid" not in raw:
        raise SpecError(f"{path}: repeat: applies to a grid or a search (a `grid:` or `search:` section)")
    return (load_grid if "grid" in raw or "tune" in raw else specs.load)(path, overrides, raw)


def _repeat(raw: dict, source: str) -> int:
    """A grid's or search's `repeat:` (taken out of raw): the seeds each configuration runs at."""
    repeat = raw.pop("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= MAX_REPEAT:
        raise SpecError(f"{source}: repeat: expected an integer from 1 to {MAX_REPEAT}, got {show(repeat)}")
    return repeat


_UNSAMPLED = ("name", "output", "scaling", "data.root")  # where runs go and what they run on: the same for all


def distribution(key, value, source: str) -> tuple:
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
    searched, tune, repeat = raw.pop("search"), raw.pop("tune", None) or {}, _repeat(raw, source)
    if not isinstance(searched, dict):
        raise SpecError(f"{source}: search: expected a mapping (algorithm, num_samples, space), got {show(searched)}")
    settings = {k: v for k, v in searched.items() if k != "space"}
    search_spec = specs.section(SearchSpec, settings, "search", source)
    tune_spec = specs.section(TuneSpec, tune, "tune", source)
    from_dict(raw, source)  # the search's own fields, blamed on the file
    if overrides:
        raw = specs.apply_overrides(raw, list(overrides))
        from_dict(raw, f"{source} (with --set)")
    space_raw = searched.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise SpecError(f"{source}: search.space: expected a mapping of dotted fields to distributions, "
                        f"got {show(space_raw)}")
    space = tuple(distribution(key, value, source) for key, value in space_raw.items())
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
    tune_spec = specs.section(TuneSpec, tune, "tune", source)
    if repeat > 1 and "train.seed" in grid:
        raise SpecError(f"{source}: repeat: the grid sweeps train.seed already; use one or the other")
    from_dict(raw, source)  # the grid's own fields, blamed on the file
    if overrides:
        raw = specs.apply_overrides(raw, list(overrides))
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


def resolved(job):
    """The job (a JobSpec, Grid or Search) with absolute data and output paths (spec.resolved)."""
    if isinstance(job, JobSpec):
        return specs.resolved(job)
    base = specs.home()
    if isinstance(job, Search):
        spec = specs.resolved_at(from_dict({**job.base, "name": job.name}, job.name), base)
        body = {k: v for k, v in spec.to_dict().items() if k != "name"}
        return dataclasses.replace(job, base=body, output_dir=spec.output.location)
    trials = tuple(dataclasses.replace(t, spec=specs.resolved_at(t.spec, base)) for t in job.trials)
    return dataclasses.replace(job, trials=trials, output_dir=trials[0].spec.output.location)
