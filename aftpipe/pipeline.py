"""Declarative pipelines: one YAML file → extract what is missing, tune on the hold-out, train every seed, report.

    cfg = load_pipeline("pipelines/sst2-2k.yaml")   # strict: unknown keys and wrong types name their path
    print(validate("pipelines/sst2-2k.yaml"))        # what would run; loads the dataset, computes nothing
    run_pipeline("pipelines/sst2-2k.yaml")           # → results/sst2-2k/{results.csv,tuning.csv,results.md,plot.png}

The protocol, for every method × source set × student (a *group*):
  1. tuning: when the group's grid has more than one (β, lr), each setting is trained once with `tune_seed`
     and the best hold-out score wins (hold-out = `train.holdout` of the labeled rows; ties: grid order);
  2. final: the chosen setting is trained for every seed on the same rows (same labeled/hold-out split, so
     the hold-out stays out of training) and the test split is reported. The tuning run with the chosen
     setting *is* the final run for `tune_seed`; it was chosen on the hold-out, never on the test split.
The linear probe is a group like the others (student ignored, params = foundation model + head).

Every run has a deterministic directory `runs/<pipeline>/<method>-<sources>-<student>-b<β>-lr<lr>-s<seed>`.
A run whose metrics.json exists is read, not retrained; a half-finished one resumes from its checkpoint. So
an interrupted sweep picks up where it stopped, and re-running a finished pipeline changes no file. A run dir
trained with other settings (say the YAML's epochs changed) is refused rather than silently reused.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from aftpipe.errors import AftpipeError
from aftpipe.methods import METHODS, MethodConfig
from aftpipe.report import PROBE, PROBE_STUDENT, RunRecord, csv_text, markdown_report, plot_png, record_from_metrics
from aftpipe.report import write_if_changed
from aftpipe.students import STUDENTS
from aftpipe.training import TEST_SPLIT, TrainConfig

NO_BETA = ("none", PROBE)  # methods without a regulariser: their β grid is [0]
MIN_SEEDS = 3  # a mean ± std over fewer seeds says little about a method; refuse it for the final runs
NAME_RE = re.compile(r"^[A-Za-z0-9_.+=-]+$")  # names that become path components


@dataclass(frozen=True)
class ExtractSpec:
    """How missing stores are extracted (see `aftpipe.extraction.ExtractConfig`)."""

    format: str = "zarr"
    dtype: str = "float16"
    batch_size: int = 128
    splits: tuple[str, ...] | None = None  # None: the train split and the test split
    workers: int | None = None  # DataLoader workers (None: extract's default)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    sources: tuple[str, ...] = ()  # source-set names (YAML: one name or a list); () = the first set
    beta: tuple[float, ...] | None = None  # β grid; None: [0] for none/linear_probe, else [MethodConfig().beta]
    lr: tuple[float, ...] | None = None  # student lr grid; None: [train.lr] (TrainConfig's 1e-3 by default)
    options: dict[str, Any] = field(default_factory=dict)  # other MethodConfig fields: tau, state_lr, ...
    unlabeled: bool = False  # add a batch of unlabeled rows per step (the transfer set)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields for this method only (steps, ...)


@dataclass(frozen=True)
class PipelineConfig:
    name: str  # results/<name>, runs/<name>; defaults to the file's stem
    dataset: str
    data_dir: str | None = None
    labels: int | None = None  # label budget; the rest of train is an unlabeled transfer set
    test_split: str | None = None  # default: dev for sst2/cola, else test
    extract: ExtractSpec = field(default_factory=ExtractSpec)
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)  # set name → source specs (concatenated)
    students: tuple[str, ...] = ("textcnn",)
    methods: tuple[MethodSpec, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields shared by every run
    tune_seed: int = 0


# TrainConfig fields the pipeline sets itself, and where the YAML says them instead
CONTROLLED = {
    "dataset": "the top-level `dataset:`", "data_dir": "the top-level `data_dir:`", "labels": "the top-level `labels:`",
    "test_split": "the top-level `test_split:`", "out": "nothing (runs go to runs/<pipeline>/...)",
    "features": "`sources:` and `methods[i].sources`", "student": "`students:`", "method": "`methods:`",
    "method_options": "`methods[i].options` and `methods[i].beta`", "seed": "`seeds:` and `tune_seed:`",
    "unlabeled": "`methods[i].unlabeled`", "resume": "nothing (pipelines always resume)",
    "overwrite": "nothing (delete a run directory to redo it)",
}
# config.yaml keys that may differ between an existing run dir and this pipeline without changing the run
IGNORED_WHEN_REUSING = {"out", "features", "data_dir", "resume", "overwrite", "device", "threads", "in_memory"}


# --- strict YAML → dataclasses -----------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """PyYAML reads `1e-3` as a string (YAML 1.1 wants `1.0e-3`); lr grids are written that way, so floats
    without a dot are resolved as numbers here."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


class _Mismatch(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(where, message)
        self.where, self.message = where, message


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))  # null: "the default", unsaid
    if origin in (tuple, list):
        inner = _describe(args[0])
        return "a list of " + {"a number": "numbers", "an integer": "integers", "a string": "strings"}.get(inner, inner)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, "a mapping")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """`value` as type `tp` (bool/int/float/str, X | None, tuple[X, ...], dict[str, X], a dataclass), or
    `_Mismatch` naming `where`. Integers pass as floats; nothing else is coerced (no "3" → 3)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:
            try:
                return _convert(value, arms[0], where)
            except _Mismatch as e:
                if e.where == where:  # the value itself is wrong: say every accepted type
                    raise _Mismatch(where, f"expected {_describe(tp)}, got {value!r}") from None
                raise
        for arm in arms:
            try:
                return _convert(value, arm, where)
            except _Mismatch:
                pass
        raise _Mismatch(where, f"expected {_describe(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _from_mapping(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise _Mismatch(where, f"expected {_describe(tp)}, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(where, f"expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool), str: isinstance(value, str)}
    if tp not in ok:
        raise TypeError(f"no YAML conversion for {tp!r}")  # a bug in this file, not a user error
    if not ok[tp]:
        raise _Mismatch(where, f"expected {_describe(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _check_keys(value: Any, known: Sequence[str], where: str) -> dict:
    if not isinstance(value, dict):
        raise _Mismatch(where, f"expected a mapping, got {value!r}")
    for k in value:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(known)}"
            raise _Mismatch(_join(where, k), f"unknown key; {hint}")
    return value


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _from_mapping(cls: type, value: Any, where: str) -> Any:
    """An instance of dataclass `cls` from a YAML mapping; unknown keys and wrong types refused."""
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    value = _check_keys(value, [f.name for f in fields], where)
    kwargs = {k: _convert(v, hints[k], _join(where, k)) for k, v in value.items()}
    missing = [f.name for f in fields if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise _Mismatch(_join(where, missing[0]), "required key missing")
    try:
        return cls(**kwargs)
    except AftpipeError as e:  # a dataclass's own check (StudentConfig): keep its sentence, add the path
        raise _Mismatch(where, str(e)) from None


def _options(cls: type, value: Any, where: str, skip: dict[str, str]) -> dict[str, Any]:
    """Fields of dataclass `cls` given as a partial mapping, checked and converted; `skip` maps the keys the
    pipeline sets itself to where they are set instead."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if isinstance(value, dict):
        for k in value:
            if k in skip:
                raise _Mismatch(_join(where, k), f"set by the pipeline; use {skip[k]}")
    value = _check_keys(value, [n for n in names if n not in skip], where)
    return {k: _convert(v, hints[k], _join(where, k)) for k, v in value.items()}


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline YAML: types, names (methods, students, sources, dataset) and ranges.

    Nothing is loaded but the file; any problem raises a one-line `AftpipeError` naming the file, the key's
    path (`methods[2].beta`) and what was expected."""
    p = Path(path)
    try:
        raw = yaml.load(p.read_text(), Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except FileNotFoundError:
        raise AftpipeError(f"no pipeline file {p}; pass a path such as pipelines/demo.yaml") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise AftpipeError(f"{p}:{where}: not valid YAML ({problem}); fix the syntax") from None
    try:
        return _build(raw, p)
    except _Mismatch as e:
        raise AftpipeError(f"{p}: {e.where}: {e.message}") from None


def _build(raw: Any, p: Path) -> PipelineConfig:
    top = [f.name for f in dataclasses.fields(PipelineConfig)]
    raw = dict(_check_keys(raw if raw is not None else {}, top, ""))
    raw.setdefault("name", p.stem)
    if "dataset" not in raw:
        raise _Mismatch("dataset", "required key missing; add e.g. `dataset: sst2`")
    methods = raw.pop("methods", None)
    train_raw = raw.pop("train", None) or {}
    hints = get_type_hints(PipelineConfig)
    kw = {k: _convert(v, hints[k], k) for k, v in raw.items() if k in hints}
    train = _options(TrainConfig, train_raw, "train", CONTROLLED)
    if not isinstance(methods, list) or not methods:
        raise _Mismatch("methods", f"expected a non-empty list of methods, got {methods!r}")
    specs = []
    for i, m in enumerate(methods):
        where = f"methods[{i}]"
        if not isinstance(m, dict):
            raise _Mismatch(where, f"expected a mapping such as `{{name: aft, beta: [0.1, 1.0]}}`, got {m!r}")
        if isinstance(m.get("sources"), str):
            m = {**m, "sources": [m["sources"]]}  # one set name is the common case
        options = m.get("options") or {}
        spec = _from_mapping(MethodSpec, {k: v for k, v in m.items() if k not in ("options", "train")}, where)
        if "options" in m:  # MethodConfig fields, typed; β is the grid, not an option
            opts = _options(MethodConfig, options, f"{where}.options", {"beta": f"`{where}.beta` (the β grid)"})
            spec = dataclasses.replace(spec, options=opts)
        if "train" in m:  # a method that needs more steps (it sees the transfer set) says so itself
            skip = {**CONTROLLED, "lr": f"`{where}.lr` (the lr grid)"}
            spec = dataclasses.replace(spec, train=_options(TrainConfig, m["train"] or {}, f"{where}.train", skip))
        specs.append(spec)
    cfg = PipelineConfig(**kw, methods=tuple(specs), train=train)
    _check(cfg)
    return cfg


def _check_train(train: dict[str, Any], where: str) -> None:
    for k, lo in (("epochs", 1), ("batch_size", 1), ("steps", 1)):
        if train.get(k) is not None and train[k] < lo:
            raise _Mismatch(f"{where}.{k}", f"must be ≥ {lo}, got {train[k]}")
    if not 0 <= train.get("holdout", TrainConfig.holdout) < 1:
        raise _Mismatch(f"{where}.holdout", f"must be in [0, 1), got {train['holdout']}")
    if train.get("phi_norm", "none") not in ("none", "standardize"):
        raise _Mismatch(f"{where}.phi_norm", f"unknown value `{train['phi_norm']}`; use none or standardize")
    if not train.get("lr", 1.0) > 0:
        raise _Mismatch(f"{where}.lr", f"must be > 0, got {train['lr']}")


def _check(cfg: PipelineConfig) -> None:
    """Names against the registries and values against their ranges; nothing is loaded."""
    from aftpipe.data import DATASETS
    from aftpipe.sources import SOURCES

    def names(where: str, registry: Any, spec: str) -> None:
        try:
            registry.resolve(spec)
        except AftpipeError as e:
            raise _Mismatch(where, str(e)) from None

    if not NAME_RE.match(cfg.name):
        raise _Mismatch("name", f"`{cfg.name}` becomes a directory name; use letters, digits and _ . + = -")
    names("dataset", DATASETS, cfg.dataset)
    if cfg.labels is not None and cfg.labels < 1:
        raise _Mismatch("labels", f"must be ≥ 1 (or null for every labeled row), got {cfg.labels}")
    if not cfg.sources:
        raise _Mismatch("sources", "no source sets; add e.g. `sources: {minilm: [minilm]}`")
    for set_name, specs in cfg.sources.items():
        if not NAME_RE.match(set_name):
            raise _Mismatch(f"sources.{set_name}", "a set name becomes part of run names; use letters, digits "
                            "and _ . + = -")
        if not specs:
            raise _Mismatch(f"sources.{set_name}", "empty set; list at least one source spec")
        for j, spec in enumerate(specs):
            names(f"sources.{set_name}[{j}]", SOURCES, spec)
    if not cfg.students:
        raise _Mismatch("students", "empty list; name at least one student (`aftpipe students`)")
    for i, s in enumerate(cfg.students):
        names(f"students[{i}]", STUDENTS, s)
    if len(cfg.seeds) < MIN_SEEDS:
        raise _Mismatch("seeds", f"the final runs need at least {MIN_SEEDS} seeds for a mean ± std, got "
                        f"{list(cfg.seeds)}")
    if len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0 or cfg.tune_seed < 0:
        raise _Mismatch("seeds", f"seeds must be distinct and ≥ 0, got {list(cfg.seeds)} (tune_seed {cfg.tune_seed})")
    e = cfg.extract
    if e.format not in ("zarr", "hdf5"):
        raise _Mismatch("extract.format", f"unknown format `{e.format}`; use zarr or hdf5")
    if e.batch_size < 1:
        raise _Mismatch("extract.batch_size", f"must be ≥ 1, got {e.batch_size}")
    _check_train(cfg.train, "train")
    seen: dict[tuple[str, str], int] = {}
    for i, m in enumerate(cfg.methods):
        where = f"methods[{i}]"
        names(f"{where}.name", METHODS, m.name)
        _check_train(m.train, f"{where}.train")
        if "holdout" in m.train or "data_seed" in m.train:  # (labels is refused as pipeline-controlled)
            raise _Mismatch(f"{where}.train", "the labeled/hold-out rows are shared by every method; set "
                            "holdout and data_seed under the top-level `train:`")
        for s in m.sources:
            if s not in cfg.sources:
                raise _Mismatch(f"{where}.sources", f"no source set `{s}`; the sets are {', '.join(cfg.sources)}")
        for s in m.sources or (next(iter(cfg.sources)),):
            if (m.name, s) in seen:
                raise _Mismatch(where, f"repeats methods[{seen[m.name, s]}] ({m.name} on {s}); merge their grids")
            seen[m.name, s] = i
        for key, grid, ok, rule in (("beta", m.beta, lambda b: b >= 0, "≥ 0"), ("lr", m.lr, lambda v: v > 0, "> 0")):
            if grid is None:
                continue
            if not grid:
                raise _Mismatch(f"{where}.{key}", "empty grid; give at least one value or drop the key")
            for j, v in enumerate(grid):
                if not (ok(v) and math.isfinite(v)):
                    raise _Mismatch(f"{where}.{key}[{j}]", f"must be {rule}, got {v:g}")
            if len({f"{v:g}" for v in grid}) != len(grid):
                raise _Mismatch(f"{where}.{key}", f"repeats a value: {list(grid)}")
        if m.name in NO_BETA and m.beta is not None and any(b != 0 for b in m.beta):
            raise _Mismatch(f"{where}.beta", f"method `{m.name}` has no regulariser, so no β; drop the key")
        if m.name == PROBE and m.lr is not None:
            raise _Mismatch(f"{where}.lr", "linear_probe fits its head with its own optimiser and ignores lr; "
                            "drop the key")
        try:
            MethodConfig(**m.options).check()
        except AftpipeError as e:
            raise _Mismatch(f"{where}.options", str(e)) from None
        if len(grid_of(cfg, m)) > 1 and cfg.train.get("holdout", TrainConfig.holdout) <= 0:
            raise _Mismatch("train.holdout", f"{where} has a grid to tune but there is no hold-out; set holdout > 0")


# --- the plan ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """One method × source set × student: a grid to tune, then one run per seed."""

    spec: MethodSpec
    sources: str
    student: str  # `head` for the linear probe

    @property
    def method(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return f"{self.method} · {self.sources} · {self.student}"


def grid_of(cfg: PipelineConfig, m: MethodSpec) -> list[tuple[float, float]]:
    """The (β, lr) settings of method `m`, β-major in the order written."""
    betas = m.beta if m.beta is not None else ((0.0,) if m.name in NO_BETA else (MethodConfig().beta,))
    lrs = m.lr if m.lr is not None else (float(cfg.train.get("lr", TrainConfig.lr)),)
    return [(b, lr) for b in betas for lr in lrs]


def plan(cfg: PipelineConfig) -> list[Group]:
    groups = []
    for m in cfg.methods:
        for s in m.sources or (next(iter(cfg.sources)),):
            for student in ((PROBE_STUDENT,) if m.name == PROBE else cfg.students):
                groups.append(Group(m, s, student))
    return groups


def run_name(method: str, sources: str, student: str, beta: float, lr: float, seed: int) -> str:
    """`<method>-<sources>-<student>-b<β>-lr<lr>-s<seed>`; a student spec's `:`/`/` become `_`."""
    student = re.sub(r"[^A-Za-z0-9_.+=-]", "_", student)
    return f"{method}-{sources}-{student}-b{beta:g}-lr{lr:g}-s{seed}"


def store_name(spec: str) -> str:
    """The store name `load_source(spec).name` gives, without loading the model (default source options)."""
    from aftpipe.sources import SOURCES

    SOURCES.resolve(spec)
    prefix, sep, arg = spec.partition(":")
    if not sep:
        return spec  # minilm, tfidf: the registry name is the store name
    if prefix == "hf":
        return "hf-" + Path(arg.rstrip("/")).name.replace("/", "-")
    if prefix == "timm":
        p = Path(arg)
        return "timm-" + (p.name if p.is_dir() else arg.replace("/", "-"))
    from aftpipe.sources import load_source

    return load_source(spec).name  # a source this file does not know how to name: ask it (loads it)


def _test_split(cfg: PipelineConfig, dataset_name: str) -> str:
    return cfg.test_split or TEST_SPLIT.get(dataset_name, "test")


def _needed_splits(cfg: PipelineConfig, dataset_name: str) -> tuple[str, ...]:
    if cfg.extract.splits:
        return cfg.extract.splits
    return tuple(dict.fromkeys([cfg.train.get("train_split", "train"), _test_split(cfg, dataset_name)]))


def _store_paths(cfg: PipelineConfig, dataset_name: str, cache_dir: str | Path) -> dict[str, Path]:
    """spec → store path, for every source spec a method uses."""
    from aftpipe.store import store_path

    used = dict.fromkeys(s for g in plan(cfg) for s in cfg.sources[g.sources])
    return {spec: store_path(cache_dir, dataset_name, store_name(spec), cfg.extract.format) for spec in used}


def _store_complete(path: Path, splits: Sequence[str]) -> bool:
    from aftpipe.store import open_features

    if not path.exists():  # checked first: open_features would also find a `.h5` beside a zarr path
        return False
    try:
        return set(splits) <= set(open_features(path).splits)
    except AftpipeError:
        return False


def _load_checked(cfg: PipelineConfig):
    """The dataset, with the splits and students' modality checked: the cheap checks before any compute."""
    from aftpipe.data import DatasetOptions, load_dataset

    dataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.train.get("dataset_options") or DatasetOptions())
    for split in _needed_splits(cfg, dataset.name):
        dataset.split(split)  # an unknown split names the ones there are
    for i, s in enumerate(cfg.students):
        cls = STUDENTS.get(s)
        if cls.modality != dataset.modality:
            raise AftpipeError(f"students[{i}]: `{s}` is for {cls.modality} but dataset `{cfg.dataset}` is "
                               f"{dataset.modality}; pick a {dataset.modality} student (`aftpipe students`)")
    if cfg.labels is not None:
        split = dataset.split(cfg.train.get("train_split", "train"))
        n = int((split.labels >= 0).sum())
        if cfg.labels > n:
            raise AftpipeError(f"labels: {cfg.labels} is more than the {n:,} labeled training rows of "
                               f"`{cfg.dataset}`; lower it")
    return dataset


def validate(path: str | Path, cache_dir: str | Path = "cache", runs_dir: str | Path = "runs") -> str:
    """Check a pipeline and say what `run_pipeline` would do; loads the dataset, computes nothing else."""
    cfg = load_pipeline(path)
    dataset = _load_checked(cfg)
    train_split = dataset.split(cfg.train.get("train_split", "train"))
    test = dataset.split(_test_split(cfg, dataset.name))
    n_labeled = int((train_split.labels >= 0).sum())
    budget = cfg.labels or n_labeled
    holdout = cfg.train.get("holdout", TrainConfig.holdout)
    n_hold = int(round(budget * holdout))
    n_train = budget - n_hold
    bs = cfg.train.get("batch_size", TrainConfig.batch_size)

    def steps(m: MethodSpec) -> int:
        t = {**cfg.train, **m.train}
        return t.get("steps") or t.get("epochs", TrainConfig.epochs) * math.ceil(n_train / t.get("batch_size", bs))

    splits = _needed_splits(cfg, dataset.name)
    paths = _store_paths(cfg, dataset.name, cache_dir)
    missing = [str(p) for p in paths.values() if not _store_complete(p, splits)]
    groups = plan(cfg)
    tuned = [g for g in groups if len(grid_of(cfg, g.spec)) > 1]
    n_tune = sum(len(grid_of(cfg, g.spec)) for g in tuned)
    shared = len(tuned) if cfg.tune_seed in cfg.seeds else 0
    n_final = len(groups) * len(cfg.seeds)
    students = [g for g in groups if g.method != PROBE]
    n_student_runs = n_tune + n_final - shared - sum(len(cfg.seeds) for g in groups if g.method == PROBE)
    n_steps = sum(steps(g.spec) * (len(cfg.seeds) + (len(grid_of(cfg, g.spec)) - (cfg.tune_seed in cfg.seeds)
                                                      if len(grid_of(cfg, g.spec)) > 1 else 0)) for g in students)
    per_run = sorted({steps(g.spec) for g in students})
    unlabeled = ", plus as many unlabeled rows for methods with `unlabeled: true`" if any(
        m.unlabeled for m in cfg.methods) else ""
    runs = Path(runs_dir) / cfg.name
    done = sum(1 for d in runs.glob("*/metrics.json")) if runs.is_dir() else 0
    lines = [
        f"{path}: OK — pipeline `{cfg.name}`",
        f"dataset {cfg.dataset} ({dataset.modality}, {dataset.num_classes} classes, metric {dataset.metric}): "
        f"{budget:,} labeled rows ({n_train:,} train + {n_hold:,} hold-out)"
        + (f", {len(train_split) - budget:,} unlabeled" if len(train_split) > budget else "")
        + f"; test split `{test.name}` {len(test):,} rows",
        f"stores ({', '.join(splits)}): {len(paths) - len(missing)} present, {len(missing)} to extract"
        + (f" ({', '.join(missing)})" if missing else ""),
        f"groups: {len(groups)} ({'; '.join(g.label for g in groups)})",
        f"tuning: {n_tune} runs with seed {cfg.tune_seed} over {len(tuned)} grids",
        f"final: {n_final} runs ({len(groups)} groups × seeds {', '.join(map(str, cfg.seeds))}; {shared} of them "
        f"are tuning runs reused)",
        f"student training: {n_student_runs} runs of {' or '.join(f'{n:,}' for n in per_run)} steps = "
        f"{n_steps:,} steps (batch {bs}{unlabeled})",
        f"already finished in {runs}: {done} runs",
    ]
    return "\n".join(lines)


# --- running -----------------------------------------------------------------------------------------------
class _Silent:
    def start(self, label: str, total: int, done: int) -> None: ...
    def advance(self, n: int, **fields: Any) -> None: ...
    def finish(self) -> None: ...
    def log(self, message: str) -> None: ...


def _train_config(cfg: PipelineConfig, g: Group, beta: float, lr: float, seed: int, features: tuple[str, ...],
                  out: Path) -> TrainConfig:
    shared = {k: v for k, v in {**cfg.train, **g.spec.train}.items() if k != "lr"}
    return TrainConfig(
        dataset=cfg.dataset, data_dir=cfg.data_dir, out=str(out), features=features, method=g.method,
        **({} if g.method == PROBE else {"student": g.student}),
        method_options=MethodConfig(beta=beta, **g.spec.options), labels=cfg.labels, test_split=cfg.test_split,
        seed=seed, lr=lr, unlabeled=g.spec.unlabeled, resume=True, **shared,
    )


def _same_run(out: Path, tc: TrainConfig) -> None:
    """Refuse to reuse a run dir trained with other settings (a changed YAML would otherwise be ignored)."""
    from aftpipe.training import config_dict

    f = out / "config.yaml"
    if not f.exists():
        return
    old = yaml.safe_load(f.read_text()) or {}
    new = yaml.safe_load(yaml.safe_dump(config_dict(tc), sort_keys=False))
    diff = [k for k in sorted(set(old) | set(new)) if k not in IGNORED_WHEN_REUSING and old.get(k) != new.get(k)]
    if diff:
        k = diff[0]
        raise AftpipeError(f"{out} was trained with {k}={old.get(k)!r}, the pipeline now says {new.get(k)!r}; "
                           f"delete that run directory (or rename the pipeline) to train it again")


def _run(cfg: PipelineConfig, g: Group, beta: float, lr: float, seed: int, features: tuple[str, ...],
         runs: Path, progress: Any, counter: list[int]) -> RunRecord:
    from aftpipe.training import train

    name = run_name(g.method, g.sources, g.student, beta, lr, seed)
    out = runs / name
    tc = _train_config(cfg, g, beta, lr, seed, features, out)
    _same_run(out, tc)
    counter[0] += 1
    if (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text())
    else:
        progress.log(f"[{counter[0]}] {name}")
        metrics = train(tc, progress)
    return record_from_metrics(metrics, method=g.method, sources=g.sources, student=g.student, beta=beta, lr=lr,
                               seed=seed, run=str(out))


def _pick(records: list[RunRecord]) -> RunRecord:
    """The best hold-out score; the first in grid order on ties; NaN never wins."""
    return max(records, key=lambda r: -math.inf if math.isnan(r.holdout) else r.holdout)


def run_pipeline(path: str | Path, cache_dir: str | Path = "cache", results_dir: str | Path = "results",
                 runs_dir: str | Path = "runs", progress: Any = None) -> Path:
    """Run a pipeline end to end (see the module docstring); returns `results/<name>`."""
    from aftpipe.data import DatasetOptions
    from aftpipe.extraction import ExtractConfig, extract

    progress = progress or _Silent()
    cfg = load_pipeline(path)
    dataset = _load_checked(cfg)
    groups = plan(cfg)

    # (a) extract the stores that are missing or lack a split; extract itself skips finished shards
    splits = _needed_splits(cfg, dataset.name)
    paths = _store_paths(cfg, dataset.name, cache_dir)
    missing = tuple(spec for spec, p in paths.items() if not _store_complete(p, splits))
    if missing:
        progress.log(f"extracting {', '.join(missing)} over {', '.join(splits)}")
        e = cfg.extract
        extract(ExtractConfig(dataset=cfg.dataset, sources=missing, splits=splits, data_dir=cfg.data_dir,
                              cache_dir=str(cache_dir), format=e.format, dtype=e.dtype, batch_size=e.batch_size,
                              workers=e.workers, dataset_options=cfg.train.get("dataset_options") or DatasetOptions()),
                progress)
    features = {s: tuple(str(paths[spec]) for spec in specs) for s, specs in cfg.sources.items()
                if all(spec in paths for spec in specs)}

    runs = Path(runs_dir) / cfg.name
    counter = [0]
    tuning: list[RunRecord] = []
    final: list[RunRecord] = []
    for g in groups:
        grid = grid_of(cfg, g.spec)
        feats = features[g.sources]
        if len(grid) > 1:  # (b) tune on the hold-out with tune_seed
            progress.log(f"tuning {g.label}: {len(grid)} settings")
            tried = [_run(cfg, g, b, lr, cfg.tune_seed, feats, runs, progress, counter) for b, lr in grid]
            tuning += tried
            best = _pick(tried)
            beta, lr = best.beta, best.lr
            progress.log(f"{g.label}: chose β={beta:g} lr={lr:g} (hold-out {best.holdout:.4f})")
        else:
            beta, lr = grid[0]
        for seed in cfg.seeds:  # (c) final runs; the tuning run with tune_seed is found finished and reused
            final.append(_run(cfg, g, beta, lr, seed, feats, runs, progress, counter))

    # (f) the reports
    out = Path(results_dir) / cfg.name
    intro = (f"Pipeline `{cfg.name}` ({Path(path).name}): dataset `{cfg.dataset}`, "
             f"{f'{cfg.labels:,} labels' if cfg.labels else 'every label'}, seeds {', '.join(map(str, cfg.seeds))}. "
             f"Reproduce with `aftpipe run {path}`; runs are in `{runs}`.")
    write_if_changed(out / "results.csv", csv_text(final))
    write_if_changed(out / "tuning.csv", csv_text(tuning))
    write_if_changed(out / "results.md", markdown_report(final, tuning, title=f"Results: {cfg.name}", intro=intro))
    write_if_changed(out / "plot.png", plot_png(final, title=cfg.name))
    progress.log(f"results → {out}")
    return out


__all__ = ["ExtractSpec", "MethodSpec", "PipelineConfig", "load_pipeline", "plan", "run_name", "run_pipeline",
           "store_name", "validate"]
