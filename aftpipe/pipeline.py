"""Declarative pipelines: one YAML file → extract what is missing, tune on the hold-out, train every seed, report.

    cfg = load_pipeline("pipelines/sst2-2k.yaml")   # strict: unknown keys and wrong types name their path
    print(validate("pipelines/sst2-2k.yaml"))        # what would run; loads the dataset, computes nothing
    run_pipeline("pipelines/sst2-2k.yaml")           # aftpipe.sweep: → results/sst2-2k/{results.csv,...,plot.png}

The protocol, for every method × source set × student (a *group*):
  1. tuning: when the group's grid has more than one (β, lr), each setting is trained once with `tune_seed`
     and the best hold-out score wins (hold-out = `train.holdout` of the labeled rows; ties: grid order);
  2. final: the chosen setting is trained for every seed on the same rows (same labeled/hold-out split, so
     the hold-out stays out of training) and the test split is reported. The tuning run with the chosen
     setting *is* the final run for `tune_seed`; it was chosen on the hold-out, never on the test split.
The linear probe is a group like the others (student ignored, params = foundation model + head).

`plan_pipeline` builds the `PipelinePlan` once (groups, stores, rows, each run's TrainConfig); `validate`
describes it and `aftpipe.sweep.run_pipeline` executes it, so both apply the same checks and counts.

Runs train one after another or several at once (`jobs`, one CPU thread each, the same numbers either way:
aftpipe.sweep). Every run has a deterministic directory `runs/<pipeline>/<method>-<sources>-<student>-b<β>-lr<lr>-s<seed>`.
A run whose metrics.json exists is read, not retrained; a half-finished one resumes from its checkpoint. So
an interrupted sweep picks up where it stopped, and re-running a finished pipeline changes no file. A run dir
trained with other settings (say the YAML's epochs changed) is refused rather than silently reused.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aftpipe import rundir
from aftpipe.components import errors_at, registered
from aftpipe.config import (Config, ConfigError, ExtractConfig, Partial, SourceOptions, TeacherConfig, TrainConfig,
                            from_dict, load_yaml, require)
from aftpipe.data import DATASETS
from aftpipe.data.base import Dataset
from aftpipe.errors import AftpipeError
from aftpipe.features import RowPlan, check_labels, coverage_error, plan_rows
from aftpipe.methods import METHODS, MethodConfig, check_options
from aftpipe.progress import Progress
from aftpipe.probe import PROBE_STUDENT
from aftpipe.sources import SOURCES, check_options as check_source_options
from aftpipe.students import STUDENTS, check_options as check_student_options
from aftpipe.training import schedule

TEACHER = "teacher:"  # a source naming one of the pipeline's `teachers:`


def teacher_dir(runs_dir: str | Path, name: str) -> Path:
    """Where teacher `name` is trained: beside the pipelines' run folders, shared by the pipelines of a runs dir."""
    return Path(runs_dir) / "teachers" / name

MIN_SEEDS = 3  # a mean ± std over fewer seeds says little about a method: allowed (smoke sweeps), with a warning
NAME_RE = re.compile(r"^[A-Za-z0-9_.+=-]+$")  # names that become path components

# TrainConfig fields the pipeline sets itself, and where the YAML says them instead
CONTROLLED = {
    "dataset": "the top-level `dataset:`", "data_dir": "the top-level `data_dir:`", "labels": "the top-level `labels:`",
    "test_split": "the top-level `test_split:`", "out": "nothing (runs go to runs/<pipeline>/...)",
    "features": "`sources:` and `methods[i].sources`", "student": "`students:`", "method": "`methods:`",
    "method_options": "`methods[i].options` and `methods[i].beta`", "seed": "`seeds:` and `tune_seed:`",
    "unlabeled": "`methods[i].unlabeled`", "phi_control": "`methods[i].control`",
    "resume": "nothing (pipelines always resume)",
    "overwrite": "nothing (delete a run directory to redo it)",
}
# ExtractConfig fields the pipeline sets itself
EXTRACT_CONTROLLED = {
    "dataset": "the top-level `dataset:`", "sources": "`sources:`", "data_dir": "the top-level `data_dir:`",
    "cache_dir": "`aftpipe run --cache-dir`", "dataset_options": "`train.dataset_options`",
    "limit": "nothing (a pipeline extracts whole splits)", "overwrite": "nothing (delete a store to rebuild it)",
}
# config.yaml keys that may differ between an existing run dir and this pipeline without changing the run
IGNORED_WHEN_REUSING = rundir.RUNTIME_ONLY | {"features"}  # store paths move with --cache-dir


def _refuse_controlled(given: dict[str, Any], controlled: dict[str, str], path: tuple) -> None:
    for k in given:
        if k in controlled:
            raise ConfigError((*path, k), f"set by the pipeline; use {controlled[k]}")


@dataclass(frozen=True)
class MethodSpec(Config):
    name: str
    sources: tuple[str, ...] = ()  # source-set names (YAML: one name or a list); () = the first set
    beta: tuple[float, ...] | None = None  # β grid; None: [0] for a method without β, else [MethodConfig().beta]
    lr: tuple[float, ...] | None = None  # student lr grid; None: [train.lr] (TrainConfig's 1e-3 by default)
    options: Partial[MethodConfig] = field(default_factory=dict)  # the method's other options: tau, state_lr, ...
    unlabeled: bool = False  # add a batch of unlabeled rows per step (the transfer set)
    train: Partial[TrainConfig] = field(default_factory=dict)  # TrainConfig fields for this method only (steps, ...)
    control: Literal["none", "shuffle", "gaussian"] = "none"  # φ replaced by a control: its own group and row
    students: tuple[str, ...] = ()  # the `students:` it runs on (YAML: one name or a list); () = every one

    @property
    def trains_student(self) -> bool:  # False for the linear probe: a head on φ itself
        return METHODS.get(self.name).uses_student

    @property
    def regularised(self) -> bool:  # a transfer term, so a β and controls: not `none`, not the probe
        return METHODS.get(self.name).regularised()

    @property
    def label(self) -> str:
        """The method as runs and tables name it: `aft`, or `aft+shuffle` under a control."""
        return self.name if self.control == "none" else f"{self.name}+{self.control}"

    def validate(self) -> None:
        registered(METHODS, self.name, ("name",))
        for key, ok, rule in (("beta", lambda b: b >= 0, "≥ 0"), ("lr", lambda v: v > 0, "> 0")):
            grid = getattr(self, key)
            if grid is None:
                continue
            require(len(grid) > 0, key, "empty grid; give at least one value or drop the key")
            for j, v in enumerate(grid):
                require(ok(v) and math.isfinite(v), (key, j), f"must be {rule}, got {v:g}")
            require(len({f"{v:g}" for v in grid}) == len(grid), key, f"repeats a value: {list(grid)}")
        require(self.regularised or self.beta is None or not any(self.beta), "beta",
                f"method `{self.name}` has no regulariser, so no β; drop the key")
        require(self.control == "none" or self.regularised, "control",
                f"method `{self.name}` has no transfer term to control; drop the key")
        require(self.trains_student or self.lr is None, "lr",
                f"{self.name} fits its head with its own optimiser and ignores lr; drop the key")
        _refuse_controlled(self.options, {"beta": "`beta` (the β grid)"}, ("options",))
        try:
            MethodConfig(**self.options)
            check_options(self.name, self.options)
        except ConfigError as e:
            raise e.under("options") from None
        _refuse_controlled(self.train, {**CONTROLLED, "lr": "`lr` (the lr grid)"}, ("train",))
        require(not {"holdout", "data_seed"} & set(self.train), "train", "the labeled/hold-out rows are shared by "
                "every method; set holdout and data_seed under the top-level `train:`")


@dataclass(frozen=True)
class StudentSpec(Config):
    """A student with settings of its own (YAML: a mapping in `students:`; a plain name is a StudentSpec
    with nothing of its own). A pretrained transformer and a word CNN want learning rates 100x apart."""

    name: str
    lr: tuple[float, ...] | None = None  # its lr grid, for methods that give none (default: train.lr)
    train: Partial[TrainConfig] = field(default_factory=dict)  # TrainConfig fields for this student only

    def validate(self) -> None:
        require(self.lr is None or (len(self.lr) > 0 and all(v > 0 for v in self.lr)), "lr",
                f"a non-empty grid of values > 0, got {self.lr}")
        _refuse_controlled(self.train, {**CONTROLLED, "lr": "`lr` (the student's lr grid)"}, ("train",))


@dataclass(frozen=True)
class PipelineConfig(Config):
    name: str  # results/<name>, runs/<name>; defaults to the file's stem
    dataset: str
    data_dir: str | None = None
    labels: int | None = None  # label budget; the rest of train is an unlabeled transfer set
    test_split: str | None = None  # default: the dataset's own (Dataset.test_split)
    extract: Partial[ExtractConfig] = field(default_factory=dict)  # how missing stores are extracted
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)  # set name → source specs (concatenated)
    students: tuple[str | StudentSpec, ...] = ("textcnn",)  # names, or mappings {name, lr, train}
    methods: tuple[MethodSpec, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    train: Partial[TrainConfig] = field(default_factory=dict)  # TrainConfig fields shared by every run
    tune_seed: int = 0
    # name → a foundation model fine-tuned on the pipeline's labeled rows first; a source `teacher:<name>`
    teachers: dict[str, TeacherConfig] = field(default_factory=dict)

    def validate(self) -> None:
        require(bool(NAME_RE.match(self.name)), "name", f"`{self.name}` becomes a directory name; use letters, "
                "digits and _ . + = -")
        registered(DATASETS, self.dataset, ("dataset",))
        require(self.labels is None or self.labels >= 1, "labels",
                f"must be ≥ 1 (or null for every labeled row), got {self.labels}")
        require(len(self.sources) > 0, "sources", "no source sets; add e.g. `sources: {minilm: [minilm]}`")
        for set_name, specs in self.sources.items():
            require(bool(NAME_RE.match(set_name)), ("sources", set_name), "a set name becomes part of run names; "
                    "use letters, digits and _ . + = -")
            require(len(specs) > 0, ("sources", set_name), "empty set; list at least one source spec")
            for j, spec in enumerate(specs):
                if spec.startswith(TEACHER):
                    require(spec[len(TEACHER):] in self.teachers, ("sources", set_name, j),
                            f"no teacher `{spec[len(TEACHER):]}` in `teachers:`"
                            + (f" ({', '.join(self.teachers)})" if self.teachers else "; declare it there"))
                    continue
                registered(SOURCES, spec, ("sources", set_name, j),
                           self.extract.get("source_options") or SourceOptions())
                with errors_at("sources", set_name, j):
                    check_source_options([spec])
                require(spec not in specs[:j], ("sources", set_name, j),
                        f"repeats `{spec}` (sources[{set_name}][{specs.index(spec)}]), whose features would be fed "
                        "twice; list each source once")
        models = [s for in_set in self.sources.values() for s in in_set if not s.startswith(TEACHER)]
        with errors_at("extract", "source_options"):  # read by at least one of them (a teacher reads none)
            check_source_options(models, self.extract.get("source_options"))
        for name in self.teachers:
            require(bool(NAME_RE.match(name)), ("teachers", name), "a teacher's name becomes its run directory; use "
                    "letters, digits and _ . + = -")
        require(len(self.students) > 0, "students", "empty list; name at least one student (`aftpipe students`)")
        object.__setattr__(self, "students", tuple(StudentSpec(s) if isinstance(s, str) else s for s in self.students))
        for i, s in enumerate(self.students):
            registered(STUDENTS, s.name, ("students", i), self.train_template().student_options)
            try:
                own = dataclasses.replace(self.train_template(), **s.train)
            except ConfigError as e:
                raise e.under("students", i, "train") from None
            with errors_at("students", i):
                check_student_options(s.name, own.student_options)
        require(len(self.seeds) > 0, "seeds", "expected at least one seed (3 or more for a mean ± std)")
        require(len(set(self.seeds)) == len(self.seeds) and min(self.seeds) >= 0 and self.tune_seed >= 0, "seeds",
                f"seeds must be distinct and ≥ 0, got {list(self.seeds)} (tune_seed {self.tune_seed})")
        require(len(self.methods) > 0, "methods", "expected a non-empty list of methods")
        self._validate_methods()
        _refuse_controlled(self.extract, EXTRACT_CONTROLLED, ("extract",))
        try:
            self.extract_config(tuple(self.source_spec(s) for specs in self.sources.values() for s in specs))
        except ConfigError as e:
            raise e.under("extract") from None

    def _validate_methods(self) -> None:
        _refuse_controlled(self.train, CONTROLLED, ("train",))
        template = self.train_template()
        seen: dict[tuple[str, str], int] = {}
        for i, m in enumerate(self.methods):
            for s in m.sources:
                require(s in self.sources, ("methods", i, "sources"),
                        f"no source set `{s}`; the sets are {', '.join(self.sources)}")
            names = [st.name for st in self.students]
            for st in m.students:
                require(st in names, ("methods", i, "students"), f"no student `{st}` in `students:` ({', '.join(names)})")
            for s in self.source_sets(m):
                for st in self.students_of(m):
                    require((m.label, s, st.name) not in seen, ("methods", i),
                            f"repeats methods[{seen.get((m.label, s, st.name))}] ({m.label} on {s} with {st.name}); "
                            "merge their grids")
                    seen[m.label, s, st.name] = i
            try:
                dataclasses.replace(template, **m.train)
            except ConfigError as e:
                raise e.under("methods", i, "train") from None
            require(all(len(self.grid(m, st)) == 1 for st in self.students) or template.holdout > 0, "train.holdout",
                    f"methods[{i}] has a grid to tune but there is no hold-out; set holdout > 0")

    def train_template(self) -> TrainConfig:
        """The settings every run shares; each run is this with its method, seed, β, lr, ... replaced."""
        try:
            return TrainConfig(dataset=self.dataset, data_dir=self.data_dir, out=".", method="none",
                               labels=self.labels, test_split=self.test_split, **self.train)
        except ConfigError as e:
            raise e.under("train") from None

    def extract_config(self, sources: tuple[str, ...], cache_dir: str | Path = "cache") -> ExtractConfig:
        return ExtractConfig(dataset=self.dataset, sources=sources, data_dir=self.data_dir, cache_dir=str(cache_dir),
                             dataset_options=self.train_template().dataset_options, **self.extract)

    def source_spec(self, spec: str, runs_dir: str | Path = "runs") -> str:
        """The feature source a spec names: `teacher:<name>` is the teacher's run (`teacher_dir`)."""
        from aftpipe.teacher import source

        return source(teacher_dir(runs_dir, spec[len(TEACHER):])) if spec.startswith(TEACHER) else spec

    def source_sets(self, m: MethodSpec) -> tuple[str, ...]:
        return m.sources or (next(iter(self.sources)),)

    def students_of(self, m: MethodSpec) -> tuple[StudentSpec, ...]:
        if not m.trains_student:
            return (StudentSpec(PROBE_STUDENT),)
        return tuple(st for st in self.students if not m.students or st.name in m.students)

    def seeds_warning(self) -> str | None:
        """The warning a sweep with fewer than MIN_SEEDS seeds carries in its report, else None."""
        n = len(self.seeds)
        if n >= MIN_SEEDS:
            return None
        return (f"n={n}: no std. The final runs use {n} seed{'s' if n > 1 else ''}; a spread needs at least "
                f"{MIN_SEEDS}, so these means are a smoke test, not a comparison of methods.")

    def unused_sources_warning(self) -> str | None:
        """The warning for source sets that no method reads (a method without `sources:` reads the first set),
        else None. `run` neither extracts nor trains on them, so a set listed for a comparison would be
        missing from the results without a word."""
        used = {s for m in self.methods for s in self.source_sets(m)}
        unused = [s for s in self.sources if s not in used]
        if not unused:
            return None
        first = next(iter(self.sources))
        return (f"source set{'s' if len(unused) > 1 else ''} {', '.join(f'`{s}`' for s in unused)} "
                f"{'are' if len(unused) > 1 else 'is'} used by no method and will not be extracted or trained "
                f"(a method without `sources:` uses the first set, `{first}`); name "
                f"{'them' if len(unused) > 1 else 'it'} in a method's `sources:` or remove "
                f"{'them' if len(unused) > 1 else 'it'}")

    def warnings(self) -> list[str]:
        """What `validate` and `run` warn about before computing anything."""
        return [w for w in (self.unused_sources_warning(), self.seeds_warning()) if w is not None]

    def grid(self, m: MethodSpec, student: StudentSpec | None = None) -> list[tuple[float, float]]:
        """The (β, lr) settings of method `m` for `student`, β-major in the order written; the lr grid is the
        method's, else the student's, else train.lr."""
        betas = m.beta if m.beta is not None else ((MethodConfig().beta,) if m.regularised else (0.0,))
        lrs = m.lr or (student.lr if student is not None and student.lr else None) or (self.train_template().lr,)
        return [(b, lr) for b in betas for lr in lrs]


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline YAML: types, names (methods, students, sources, dataset) and ranges.

    Nothing is loaded but the file; any problem raises a one-line `AftpipeError` naming the file, the key's
    path (`methods[2].beta`) and what was expected."""
    p = Path(path)
    raw = load_yaml(p, "pipeline file") or {}
    try:
        return from_dict(PipelineConfig, {"name": p.stem, **raw} if isinstance(raw, dict) else raw)
    except ConfigError as e:
        raise AftpipeError(f"{p}: {e}") from None


# --- the plan ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """One method × source set × student: a grid to tune, then one run per seed."""

    spec: MethodSpec
    sources: str
    student: str  # `head` for the linear probe
    grid: tuple[tuple[float, float], ...]
    student_train: tuple[tuple[str, Any], ...] = ()  # the student's own TrainConfig settings

    @property
    def method(self) -> str:
        """The method's name in runs and tables (with its control, if any)."""
        return self.spec.label

    @property
    def label(self) -> str:
        return f"{self.method} · {self.sources} · {self.student}"


def plan(cfg: PipelineConfig) -> list[Group]:
    return [Group(m, s, st.name, tuple(cfg.grid(m, st)), tuple(st.train.items()))
            for m in cfg.methods for s in cfg.source_sets(m) for st in cfg.students_of(m)]


def run_name(method: str, sources: str, student: str, beta: float, lr: float, seed: int) -> str:
    """`<method>-<sources>-<student>-b<β>-lr<lr>-s<seed>`; a student spec's `:`/`/` become `_`."""
    student = re.sub(r"[^A-Za-z0-9_.+=-]", "_", student)
    return f"{method}-{sources}-{student}-b{beta:g}-lr{lr:g}-s{seed}"


@dataclass(frozen=True)
class PipelinePlan:
    """Everything a pipeline will do, worked out before any compute: its groups, the stores it reads (and
    which must be extracted), the rows every run shares, and each run's TrainConfig."""

    cfg: PipelineConfig
    path: Path
    dataset: Dataset
    groups: tuple[Group, ...]
    splits: tuple[str, ...]  # splits every store must hold
    stores: dict[str, Path]  # source spec → store path
    rows: RowPlan  # labeled-train / hold-out / unlabeled rows, the same for every run
    runs_dir: Path  # <runs-dir>/<pipeline>

    def missing_stores(self) -> list[str]:
        return [spec for spec, p in self.stores.items() if not _store_complete(p, self.splits)]

    def features(self, sources: str) -> tuple[str, ...]:
        return tuple(str(self.stores[spec]) for spec in self.cfg.sources[sources])

    def train_config(self, g: Group, beta: float, lr: float, seed: int) -> TrainConfig:
        tc = dataclasses.replace(self.cfg.train_template(), **{**dict(g.student_train), **g.spec.train})
        return dataclasses.replace(
            tc, out=str(self.run_dir(g, beta, lr, seed)), features=self.features(g.sources), method=g.spec.name,
            student=g.student if g.spec.trains_student else tc.student, seed=seed, lr=lr, unlabeled=g.spec.unlabeled,
            phi_control=g.spec.control,
            method_options=MethodConfig(**({"beta": beta} if g.spec.regularised else {}), **g.spec.options),
            resume=True)

    def run_dir(self, g: Group, beta: float, lr: float, seed: int) -> Path:
        return self.runs_dir / run_name(g.method, g.sources, g.student, beta, lr, seed)

    def steps(self, g: Group) -> int:
        return schedule(self.train_config(g, *g.grid[0], self.cfg.tune_seed), len(self.rows.train)).total

    def runs(self, g: Group) -> int:
        """How many distinct runs group `g` trains: its tuning grid (if it has one) and one per seed, the
        tuning run of the chosen setting counted once."""
        seeds = len(self.cfg.seeds)
        if len(g.grid) == 1:
            return seeds
        return len(g.grid) + seeds - (self.cfg.tune_seed in self.cfg.seeds)

    @property
    def total_runs(self) -> int:
        return sum(self.runs(g) for g in self.groups)

    def describe(self) -> str:
        """What `run_pipeline` would do, in a few lines (the `aftpipe validate` output)."""
        cfg, rows, ds = self.cfg, self.rows, self.dataset
        train_split = ds.split(self.cfg.train_template().train_split)
        test = ds.test(cfg.test_split)
        missing = [str(self.stores[s]) for s in self.missing_stores()]
        tuned = [g for g in self.groups if len(g.grid) > 1]
        reused = cfg.tune_seed in cfg.seeds
        students = [g for g in self.groups if g.spec.trains_student]
        runs = [(g, len(cfg.seeds) + (len(g.grid) - reused if len(g.grid) > 1 else 0)) for g in students]
        budget = len(rows.train) + len(rows.holdout)
        unlabeled = ", plus as many unlabeled rows for methods with `unlabeled: true`" if any(
            m.unlabeled for m in cfg.methods) else ""
        # runs of this plan already finished (any other folder in runs_dir is left alone by `run`); a tuned
        # group's finals may belong to any setting of its grid until the tuning has chosen
        mine = {self.run_dir(g, b, lr, s) for g in self.groups for b, lr in g.grid for s in (cfg.tune_seed, *cfg.seeds)}
        done = min(self.total_runs, sum(rundir.is_finished(d) for d in mine))
        n_unl = len(train_split) - budget
        return "\n".join([
            f"{self.path}: pipeline `{cfg.name}` is valid; `aftpipe run` would do this:",
            f"dataset {cfg.dataset} ({ds.modality}, {ds.num_classes} classes, metric {ds.metric}): {budget:,} labeled "
            f"rows ({len(rows.train):,} train + {len(rows.holdout):,} hold-out)"
            + (f", {n_unl:,} unlabeled" if n_unl > 0 else "") + f"; test split `{test.name}` {len(test):,} rows",
            f"stores ({', '.join(self.splits)}): {len(self.stores) - len(missing)} present, {len(missing)} to extract"
            + (f" first ({', '.join(missing)})" if missing else ""),
            *[f"teacher `{name}`: {cfg.teachers[name].student} fine-tuned first ({cfg.teachers[name].steps} steps) "
              f"into {teacher_dir(self.runs_dir.parent, name)}"
              for name in (s[len(TEACHER):] for s in self.missing_stores() if s.startswith(TEACHER))],
            f"groups: {len(self.groups)} ({'; '.join(g.label for g in self.groups)})",
            f"tuning: {sum(len(g.grid) for g in tuned)} runs with seed {cfg.tune_seed} over {len(tuned)} grids",
            f"final: {len(self.groups) * len(cfg.seeds)} runs ({len(self.groups)} groups × seeds "
            f"{', '.join(map(str, cfg.seeds))}; {len(tuned) if reused else 0} of them are tuning runs reused)",
            f"student training: {sum(n for _, n in runs)} runs of "
            f"{' or '.join(f'{n:,}' for n in sorted({self.steps(g) for g in students}))} steps = "
            f"{sum(self.steps(g) * n for g, n in runs):,} steps "
            f"(batch {cfg.train_template().batch_size}{unlabeled})",
            f"already finished in {self.runs_dir}: {done} of {self.total_runs} runs",
            *(f"warning: {w}" for w in cfg.warnings()),
        ])


def _store_complete(path: Path, splits: tuple[str, ...]) -> bool:
    from aftpipe.store import open_features
    from aftpipe.store.location import remote_errors

    with remote_errors(path, "read the store"):
        if not path.exists():  # checked first: open_features would also find a `.h5` beside a zarr path
            return False
    try:
        return set(splits) <= set(open_features(path).splits)
    except AftpipeError:
        return False


def _check_coverage(path: Path, dataset: Dataset, splits: tuple[str, ...], stored_rows_only: bool) -> None:
    """Refuse a store that holds only part of a split the runs need (made with --limit), as `train` would."""
    from aftpipe.store import open_features

    store = open_features(path)
    for name in splits:
        info, split = store.split_info(name), dataset.split(name)
        if info.n < len(split) and not stored_rows_only:
            raise coverage_error(str(path), info.n, split, info.limit)


def _load_checked(cfg: PipelineConfig) -> Dataset:
    """The dataset, with the splits, the students' modality and the label budget checked."""
    from aftpipe.data import load_dataset

    template = cfg.train_template()
    dataset = load_dataset(cfg.dataset, cfg.data_dir, template.dataset_options)
    test = dataset.test(cfg.test_split)
    for split in (template.train_split, *(cfg.extract.get("splits") or ())):
        dataset.split(split)  # an unknown split names the ones there are
    for i, s in enumerate(st.name for st in cfg.students):
        cls = STUDENTS.get(STUDENTS.split_options(s)[0])
        if cls.modality != dataset.modality:
            raise AftpipeError(f"students[{i}]: `{s}` is for {cls.modality} but dataset `{cfg.dataset}` is "
                               f"{dataset.modality}; pick a {dataset.modality} student (`aftpipe students`)")
    split = dataset.split(template.train_split)
    check_labels(split, test, template.num_classes or dataset.num_classes)
    n = int((split.labels >= 0).sum())
    if cfg.labels is not None and cfg.labels > n:
        raise AftpipeError(f"labels: {cfg.labels} is more than the {n:,} labeled training rows of "
                           f"`{cfg.dataset}`; lower it")
    return dataset


def plan_pipeline(path: str | Path, cache_dir: str | Path = "cache", runs_dir: str | Path = "runs") -> PipelinePlan:
    """Load and check a pipeline and work out everything it will do; loads the dataset, computes nothing."""
    import numpy as np

    from aftpipe.sources import check_source, store_name
    from aftpipe.store import store_path
    from aftpipe.teacher import check_teacher

    cfg = load_pipeline(path)
    dataset = _load_checked(cfg)
    groups = tuple(plan(cfg))
    template = cfg.train_template()
    used = tuple(dict.fromkeys(s for g in groups for s in cfg.sources[g.sources]))
    ext = cfg.extract_config(tuple(cfg.source_spec(s, runs_dir) for s in used), cache_dir)
    splits = ext.splits or tuple(dict.fromkeys([template.train_split, dataset.test(cfg.test_split).name]))
    folder = ext.name or dataset.name  # the folder `aftpipe extract` would choose
    stores = {spec: store_path(cache_dir, folder, store_name(cfg.source_spec(spec, runs_dir), ext.source_options),
                               ext.format) for spec in used}
    for spec, store in stores.items():
        if _store_complete(store, splits):  # what the runs will read must cover the splits they need
            _check_coverage(store, dataset, splits, template.stored_rows_only)
        elif spec.startswith(TEACHER):  # fine-tuned first, by `run`
            check_teacher(cfg.teachers[spec[len(TEACHER):]])
        else:  # what `run` would extract must be loadable
            check_source(spec, ext.source_options)
    train = dataset.split(template.train_split)
    rows = plan_rows(np.arange(len(train)), train.labels, cfg.labels, template.holdout, template.data_seed, train.origin)
    return PipelinePlan(cfg, Path(path), dataset, groups, splits, stores, rows, Path(runs_dir) / cfg.name)


def validate(path: str | Path, cache_dir: str | Path = "cache", runs_dir: str | Path = "runs") -> str:
    """Check a pipeline and say what `run_pipeline` would do; loads the dataset, computes nothing else."""
    return plan_pipeline(path, cache_dir, runs_dir).describe()


# --- running -----------------------------------------------------------------------------------------------
def check_reusable(out: Path, tc: TrainConfig) -> None:
    """Refuse to reuse a run dir trained with other settings (a changed YAML would otherwise be ignored),
    finished or still being built."""
    if not rundir.is_finished(out):
        out = rundir.work_dir(out)
    old = rundir.read_config_dict(out)
    if old is None:
        return
    try:  # options added since that run was trained take their defaults, which is what it trained with
        old = from_dict(TrainConfig, old).to_dict()
    except ConfigError:
        pass  # a key this version no longer knows: compared as written, so the difference is named
    for k, was, now in rundir.config_diff(old, tc.to_dict(), IGNORED_WHEN_REUSING)[:1]:
        raise AftpipeError(f"{out} was trained with {k}={was!r}, the pipeline now says {now!r}; delete that run "
                           "directory (or rename the pipeline) to train it again")


def reproduce_command(path: str | Path, cache_dir: str | Path, results_dir: str | Path, runs_dir: str | Path) -> str:
    """The full `aftpipe run` command that produces these results again, every location spelled out."""
    import shlex

    return shlex.join(["aftpipe", "run", str(path), "--cache-dir", str(cache_dir), "--runs-dir", str(runs_dir),
                       "--results-dir", str(results_dir)])


def fine_tune_teachers(p: PipelinePlan, missing: tuple[str, ...], progress: Progress) -> None:
    """Train each `teachers:` entry whose store is still to extract, at `teacher_dir` (one trained with other
    settings is refused, as a run is)."""
    from aftpipe.teacher import fine_tune, teacher_train_config

    for spec in missing:
        if not spec.startswith(TEACHER):
            continue
        name = spec[len(TEACHER):]
        teacher, base, out = p.cfg.teachers[name], p.cfg.train_template(), teacher_dir(p.runs_dir.parent, name)
        check_reusable(out, teacher_train_config(teacher, base, out))
        progress.log(f"fine-tuning teacher `{name}` ({teacher.student}) on the labeled rows → {out}")
        fine_tune(teacher, base, out, progress)


__all__ = ["MethodSpec", "PipelineConfig", "PipelinePlan", "StudentSpec", "load_pipeline", "plan", "plan_pipeline",
           "reproduce_command", "run_name", "validate"]
