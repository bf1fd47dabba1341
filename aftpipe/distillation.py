"""`aftpipe distill`: a labeled dataset in, a small deployed model out, within reach of its fine-tuned teacher.

    aftpipe.distill(aftpipe.DistillConfig(dataset="sst2", labels=2000, out="models/sst2"))

The recipe measured here (BENCHMARKS "Regime 3"), as stages over the existing API, each cached under `out`:

    teacher         the foundation model fine-tuned on the labeled rows (aftpipe/teacher.py)    out/teacher
    teacher-store*  its penultimate features over every train and test row (and over K         out/cache/...
                    word-dropout views of each train row when the unlabeled pool is small)
    student-*       TOKT into the small student over the transfer set: each candidate (lr,     out/runs/tokt-*
                    views) with seed 0, the chosen one (hold-out or agreement) with every other seed
    probe-store, probe, none-*   the report's references: a linear probe on the frozen model   out/runs/...
                    (over the labeled and test rows only), the student trained without transfer
    publish         the chosen student's model folder copied to `out` (predict/export/load_model)
    onnx            out/onnx
    report          out/report.md, report.json, report.png and the card's one-sentence trade-off

Each stage is keyed by a hash of the options it depends on, its own and its inputs' (`stages.json`). A
finished stage whose key is unchanged is skipped; a killed stage runs again and resumes (a run from its
checkpoint, a store from its finished shards); a stage whose key changed is redone from nothing, and with it
only the stages downstream of it. So a finished distill re-run changes no file, and a changed student lr
retrains the students but not the teacher.

Agreement (a label-free score): `agreement_rows` unlabeled rows are kept out of every student's transfer set,
and the fraction of them on which student and teacher predict the same class is reported for each candidate
beside its hold-out score. With a few hundred labels the hold-out is too small to tell settings apart (one
row is half a point); the agreement rows are thousands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aftpipe import export, extraction, rundir
from aftpipe.config import (
    DatasetOptions,
    DistillConfig,
    ExtractConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
)
from aftpipe.data import load_dataset
from aftpipe.data.base import Dataset
from aftpipe.errors import AftpipeError, option_hint, option_name
from aftpipe.features import agreement_split, plan_rows
from aftpipe.fileio import write_if_changed, write_json
from aftpipe.model import CARD, ModelSpec, add_seed_summary, load_model, read_model_spec, render_card
from aftpipe.probe import PROBE
from aftpipe.progress import Progress, counting, default_progress
from aftpipe.recipes import train
from aftpipe.report import RunRecord, mean_std, plot_png
from aftpipe.sources import store_name
from aftpipe.store import open_features, store_path
from aftpipe.students import STUDENTS
from aftpipe.students.pretrained import _model_dir
from aftpipe.students.tokenizer import base_vocab
from aftpipe.teacher import check_teacher, source, teacher_train_config

STAGES = rundir.DISTILL_STAGES
# the files that make a run folder a model folder (rundir, model.py), copied from the chosen student to `out`
MODEL_FILES = ("student.safetensors", "student.json", "tokenizer.json", "model.json", "config.yaml", "metrics.jsonl",
               "metrics.json")  # metrics.json last: it marks the folder finished
VIEWS_BELOW = 10  # fewer unlabeled rows than this many times the labels: augmented views are tried as well
AUTO_VIEWS = 8  # the views that let TOKT approach the probe on AG News (README "Augmented views")
# the teacher's default length: TEACHER_EPOCHS passes over the labeled rows (DistillConfig), never fewer steps
# than the 300 measured on SST-2-2k (5 passes over its 1,800 rows; fewer rows need no fewer steps) nor more
# than the 900 measured on CoLA (3.7 passes over 7,700 rows: MCC 0.163 where 300 steps gave 0.100)
TEACHER_STEPS = (300, 900)
WORD_STUDENTS = ("textcnn", "bow-mlp", "tiny-transformer")  # students with a word embedding table to initialise
DEFAULT_STUDENT = {"text": "textcnn", "image": "small-cnn"}
AGREEMENT_SHARE = 4  # at most 1/4 of the unlabeled pool is kept out of distillation for the agreement score
BENCH_ROWS = {1: 64, 64: 512}  # rows timed at each batch size


# --- pure pieces ------------------------------------------------------------------------------------------
def stage_key(*parts: Any) -> str:
    """A stage's key: a hash of the options it depends on (and its inputs' keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_key(tc: TrainConfig, *upstream: str) -> str:
    """A training stage's key: its config without what does not change the run (where files are, threads),
    and its inputs' keys (the store it reads stands for `features`)."""
    d = tc.to_dict()
    for k in rundir.RUNTIME_ONLY | {"features"}:
        d.pop(k, None)
    return stage_key(d, *upstream)


def agreement(student: np.ndarray, teacher: np.ndarray) -> float:
    """Fraction of rows on which two models predict the same class (logits or class ids, row-aligned)."""
    s = student.argmax(1) if student.ndim == 2 else student
    t = teacher.argmax(1) if teacher.ndim == 2 else teacher
    return float(np.mean(s == t)) if len(s) else math.nan


def choose(candidates: Sequence[dict[str, Any]], by: str) -> dict[str, Any]:
    """The candidate with the best `holdout` or `agreement` (ties: the first, the grid's order); by the hold-out
    when no candidate has an agreement score (no unlabeled rows to measure it on)."""
    if all(math.isnan(c[by]) for c in candidates):
        by = "holdout"
    return max(candidates, key=lambda c: (-math.inf if math.isnan(c[by]) else c[by]))


def teacher_steps(epochs: float, rows: int, batch_size: int, bounds: tuple[int, int] = TEACHER_STEPS) -> int:
    """`epochs` passes of `batch_size` over `rows` labeled rows, kept within `bounds`."""
    return min(max(math.ceil(epochs * rows / batch_size), bounds[0]), bounds[1])


def views_tried(given: int | None, modality: str, unlabeled: int, labeled: int) -> tuple[int, ...]:
    """The transfer sets to distil over: `given`, else for text with an unlabeled pool under VIEWS_BELOW × the
    labels both the rows alone (1) and AUTO_VIEWS word-dropout views per row, for the hold-out to choose
    between (views helped on AG News and hurt on CoLA, where dropping words changes acceptability); else 1."""
    if given:
        return (given,)
    return (1, AUTO_VIEWS) if modality == "text" and unlabeled < VIEWS_BELOW * labeled else (1,)


def _short(n: float) -> str:
    """442,502 → 0.44M, 8,200,000 → 8.2M, 6,418 → 6.4K."""
    return f"{n / 1e3:.1f}K" if n < 1e5 else f"{n / 1e6:.2f}M" if n < 1e6 else f"{n / 1e6:.1f}M"


def trade_off(student_params: int, teacher_params: int, teacher_name: str, speedup: float, gap: float) -> str:
    """The card's one sentence: "0.44M parameters, 1/51 of MiniLM, 66× its throughput, 2.4 points below the
    teacher" (`gap`: the teacher's test metric minus the student's, as a fraction; speedup at batch 64)."""
    points = abs(gap) * 100
    side = "below" if gap > 0 else "above"
    speed = f"{speedup:.0f}×" if speedup >= 10 else f"{speedup:.1f}×"
    return (f"{_short(student_params)} parameters, 1/{teacher_params / student_params:.0f} of {teacher_name}, "
            f"{speed} its throughput, {points:.1f} points {side} the teacher")


# --- the stage ledger -------------------------------------------------------------------------------------
def _remove(path: Path) -> None:
    """A stage's output and what a half-made run leaves beside it (`<out>.partial`, `<out>.lock`)."""
    for p in (path, rundir.work_dir(path), path.with_name(path.name + ".lock")):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


class Stages:
    """Which stages of a distill folder finished, under which key (`stages.json`), and how long each took."""

    def __init__(self, out: Path, progress: Progress) -> None:
        self.path = out / STAGES
        self.progress = progress
        self.state: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.ran: list[str] = []  # stages computed by this call (the rest were cached)

    def run(self, name: str, key: str, outputs: Sequence[Path], fn: Callable[[], Any], what: str,
            owned: bool = True) -> None:
        """Run stage `name` unless it finished under `key` and its outputs are there. A stage recorded under
        another key is redone from nothing (its `owned` outputs removed first); one recorded under this key
        but unfinished resumes."""
        rec = self.state.get(name)
        if rec and rec["key"] == key and rec.get("done") and all(p.exists() for p in outputs):
            return
        if rec and rec["key"] != key and owned:
            for p in outputs:
                _remove(p)
        self.state[name] = {"key": key, "done": False}
        self._save()
        self.progress.log(f"distill · {name}: {what}")
        t = time.perf_counter()
        fn()
        self.state[name] = {"key": key, "done": True, "wall_s": round(time.perf_counter() - t, 1)}
        self._save()
        self.ran.append(name)

    def key(self, name: str) -> str:
        return self.state[name]["key"]

    def _save(self) -> None:
        write_json(self.path, self.state)


# --- the plan ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """`DistillConfig` resolved against its dataset: the teacher, the student and its options, the views to
    try, the rows kept for agreement, and the TrainConfig every run starts from."""

    cfg: DistillConfig
    teacher: TeacherConfig
    student: str
    student_options: StudentConfig
    views: tuple[int, ...]  # the transfer sets tried: 1 (the rows as they are) and/or K augmented views per row
    pool: int  # unlabeled rows (views=1)
    agreement_n: int
    base: TrainConfig  # the data every run shares (dataset, labels, hold-out, test split)
    test_split: str
    dataset: Dataset  # loaded once, without views: store names and the report's test rows come from it

    @property
    def modality(self) -> str:
        return self.dataset.modality

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def student_config(self, lr: float, seed: int, store: Path, views: int = 1) -> TrainConfig:
        cfg = self.cfg
        return dataclasses.replace(
            self.base, features=(str(store),), student=self.student, student_options=self.student_options,
            method="tokt", unlabeled=self.pool > 0 or views > 1, steps=cfg.student_steps, lr=lr, seed=seed,
            agreement_rows=self.agreement_n, out=str(self.out / "runs" / f"tokt-{_setting(lr, views)}-s{seed}"),
            resume=True, dataset_options=dataclasses.replace(self.base.dataset_options, views=views))

    def none_config(self, seed: int) -> TrainConfig:
        """The same student trained on the labels alone, from its own initialisation: no transfer at all."""
        options = dataclasses.replace(self.student_options, init_embeddings=None)
        return dataclasses.replace(self.base, student=self.student, student_options=options, method="none",
                                   steps=self.cfg.student_steps, lr=self.cfg.student_lr[0], seed=seed,
                                   out=str(self.out / "runs" / f"none-s{seed}"), resume=True)

    def probe_config(self, store: Path, stored_rows_only: bool = False) -> TrainConfig:
        """The probe on the frozen model; `stored_rows_only`: its store holds only the labeled and test rows (so
        its hold-out is drawn among the labeled rows it holds, the same rows, split by the same seed)."""
        return dataclasses.replace(self.base, features=(str(store),), method=PROBE,
                                   stored_rows_only=stored_rows_only, out=str(self.out / "runs" / "probe"),
                                   resume=True)


def _shares_vocabulary(model: str, given_as: str | None = None) -> bool:
    """Whether text model `model` (minilm, hf:<dir>) tokenises with the students' WordPiece vocabulary; a model
    that is not there is an error naming the option it was `given_as` (else: False)."""
    from transformers import AutoTokenizer

    try:
        ref = _model_dir("minilm" if model == "minilm" else model.removeprefix("hf:"))
        return AutoTokenizer.from_pretrained(ref).get_vocab() == base_vocab()
    except AftpipeError as e:
        if given_as is None:
            return False
        raise AftpipeError(f"{given_as} {model}: {e}") from None
    except (OSError, ValueError, ImportError):  # no tokenizer there (a timm folder is not a text model)
        return False


def _check_per_class(labels: np.ndarray, rows: np.ndarray, holdout: float, names: Sequence[Any]) -> None:
    """Every class needs enough labeled rows for the hold-out to hold one of them: 1/holdout rows."""
    need = math.ceil(1 / holdout - 1e-9)
    counts = np.bincount(labels[rows], minlength=len(names) or int(labels.max()) + 1)
    for c, n in enumerate(counts):
        if n < need:
            name = names[c] if c < len(names) else c
            raise AftpipeError(
                f"class `{name}` has {n} labeled row{'s' if n != 1 else ''}; a {holdout:.0%} hold-out needs at least "
                f"{need} of every class to choose the teacher's checkpoint; raise {option_name('labels')} or "
                f"{option_name('holdout')}")


def plan_recipe(cfg: DistillConfig) -> Recipe:
    """Check `cfg` against its dataset and settle what it leaves open; loads the dataset, trains nothing."""
    options = DatasetOptions(text_col=cfg.text_col, label_col=cfg.label_col)
    dataset = load_dataset(cfg.dataset, cfg.data_dir, options)
    teacher = cfg.teacher_config()  # its length is settled below, from the labeled rows
    if teacher.modality != dataset.modality:
        example = "minilm" if dataset.modality == "text" else "timm:<dir>"
        raise AftpipeError(f"teacher `{cfg.teacher}` is for {teacher.modality} but dataset `{cfg.dataset}` is "
                           f"{dataset.modality}; pass {option_hint('teacher', example)}")
    check_teacher(teacher)
    student = cfg.student or DEFAULT_STUDENT[dataset.modality]
    cls = STUDENTS.get(STUDENTS.split_options(student)[0])
    if cls.modality != dataset.modality:
        raise AftpipeError(f"student `{student}` is for {cls.modality} but dataset `{cfg.dataset}` is "
                           f"{dataset.modality}; pick a {dataset.modality} student (`aftpipe students`)")
    test_split = dataset.test(cfg.test_split).name
    base = TrainConfig(dataset=cfg.dataset, out=".", method="none", labels=cfg.labels, holdout=cfg.holdout,
                       data_seed=cfg.data_seed, test_split=cfg.test_split, data_dir=cfg.data_dir, device=cfg.device,
                       threads=cfg.threads, dataset_options=options)
    train = dataset.split(base.train_split)
    dataset.split(test_split)
    rows = plan_rows(np.arange(len(train)), train.labels, cfg.labels, cfg.holdout, cfg.data_seed, train.origin)
    _check_per_class(train.labels, np.concatenate([rows.train, rows.holdout]), cfg.holdout, dataset.class_names or [])
    teacher = cfg.teacher_config(teacher_steps(cfg.teacher_epochs, len(rows.train), cfg.teacher_batch_size))

    init = cfg.init_embeddings
    if init == "auto":
        word = STUDENTS.split_options(student)[0] in WORD_STUDENTS
        init = teacher.model if word and teacher.modality == "text" and _shares_vocabulary(teacher.model) else "none"
    elif init != "none" and not _shares_vocabulary(init, option_name("init_embeddings")):
        raise AftpipeError(f"{option_name('init_embeddings')} {init}: its vocabulary is not the students' WordPiece "
                           "vocabulary (MiniLM's, bert-base-uncased); use a model with that tokenizer, e.g. minilm, "
                           "or `none`")
    student_options = StudentConfig(init_embeddings=None if init == "none" else init)

    labeled = len(rows.train) + len(rows.holdout)
    views = views_tried(cfg.views, dataset.modality, len(rows.unlabeled), labeled)
    agreement_n = min(cfg.agreement_rows, len(rows.unlabeled) // AGREEMENT_SHARE)
    if cfg.select_by == "agreement" and agreement_n == 0:
        raise AftpipeError(f"{option_name('select_by')} agreement needs unlabeled rows to measure it on and "
                           f"`{cfg.dataset}` has {len(rows.unlabeled)} after the labels; use --select-by holdout")
    return Recipe(cfg, teacher, student, student_options, views, len(rows.unlabeled), agreement_n, base, test_split,
                  dataset)


# --- the stages -------------------------------------------------------------------------------------------
def _claim(out: Path) -> None:
    """`out` is new, or a distill folder (which this continues); anything else is refused untouched."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / STAGES).exists())):
        raise AftpipeError(f"{out} exists and is not an `aftpipe distill` folder; choose another "
                           f"{option_name('out')} (a distill folder is continued, never another folder)")
    out.mkdir(parents=True, exist_ok=True)


def _extract_config(r: Recipe, source: str, cache_dir: Path | str, views: int) -> ExtractConfig:
    return ExtractConfig(dataset=r.cfg.dataset, sources=(source,), splits=(r.base.train_split, r.test_split),
                         data_dir=r.cfg.data_dir, cache_dir=str(cache_dir), device=r.cfg.device,
                         dataset_options=dataclasses.replace(r.base.dataset_options, views=views))


def _store(r: Recipe, ext: ExtractConfig) -> Path:
    """Where `extract(ext)` writes: `ext.name`, else the dataset's folder for `ext`'s views (Dataset.name,
    `<name>-views8`), derived from the recipe's dataset rather than loaded again."""
    name = ext.name or dataclasses.replace(r.dataset, views=ext.dataset_options.views).name
    return Path(store_path(ext.cache_dir, name, store_name(ext.sources[0], ext.source_options), ext.format))


def _complete_store(path: Path, splits: dict[str, int]) -> bool:
    """Whether `path` is a finished store holding every row of each split in `splits` (name → rows)."""
    try:
        infos = {i.name: i for i in open_features(path).split_infos()}
    except (AftpipeError, OSError, KeyError, ValueError):
        return False
    return all(n in infos and infos[n].complete and infos[n].n == rows for n, rows in splits.items())


def _probe_extract(r: Recipe) -> tuple[ExtractConfig, dict[str, np.ndarray] | None]:
    """The frozen model's extraction for the probe, and the train rows it is limited to. The probe needs
    the labeled rows (hold-out included) and the test split, not the unlabeled pool, which on SST-2-2k is
    97% of the work; so unless the dataset's full store is already in the cache (reused as it is), only those
    rows are extracted, into `<name>-labeled<N>-<hash of the rows>`, which no other row choice shares."""
    ext = _extract_config(r, r.teacher.model, r.cfg.cache_dir, 1)
    train, test = r.dataset.split(r.base.train_split), r.dataset.split(r.test_split)
    rows = _labeled_rows(r)
    if len(rows) == len(train) or _complete_store(_store(r, ext), {train.name: len(train), test.name: len(test)}):
        return ext, None
    digest = hashlib.sha256(rows.tobytes()).hexdigest()[:8]
    return (dataclasses.replace(ext, name=f"{r.dataset.name}-labeled{len(rows)}-{digest}"),
            {train.name: rows, test.name: np.arange(len(test))})


def _labeled_rows(r: Recipe) -> np.ndarray:
    train = r.dataset.split(r.base.train_split)
    rows = plan_rows(np.arange(len(train)), train.labels, r.cfg.labels, r.cfg.holdout, r.cfg.data_seed, train.origin)
    return np.sort(np.concatenate([rows.train, rows.holdout]))


def _rows_key(rows: dict[str, np.ndarray] | None) -> list[str]:
    """What a store limited to `rows` adds to its stage's key (nothing for a whole store, whose key stays)."""
    return [] if rows is None else [stage_key({k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in rows.items()})]


def _store_stage(views: int) -> str:
    return "teacher-store" if views == 1 else f"teacher-store-views{views}"


def _ext_key(ext: ExtractConfig, *upstream: str) -> str:
    d = ext.to_dict()
    for k in ("cache_dir", "data_dir", "device", "workers", "batch_size", "sources"):
        d.pop(k, None)
    return stage_key(d, *upstream)


def _setting(lr: float, views: int) -> str:
    """A candidate's name in its stage and run folder: `lr0.01`, with augmented views `views8-lr0.01`."""
    return f"lr{lr:g}" if views == 1 else f"views{views}-lr{lr:g}"


def _agreement_inputs(r: Recipe, views: int) -> list[Any]:
    """The inputs of the unlabeled rows every student over `views` is kept from (as `training` keeps them)."""
    ds = load_dataset(r.cfg.dataset, r.cfg.data_dir, dataclasses.replace(r.base.dataset_options, views=views))
    train = ds.split(r.base.train_split)
    rows = plan_rows(np.arange(len(train)), train.labels, r.cfg.labels, r.cfg.holdout, r.cfg.data_seed, train.origin)
    held = agreement_split(rows.unlabeled, r.agreement_n, r.cfg.data_seed, train.origin)[1]
    return [train.inputs[int(i)] for i in held]


def _score_candidate(run: Path, teacher_run: Path, inputs: list[Any]) -> None:
    """Write `<run>/agreement.json`: the student's agreement with the teacher on rows it never trained on."""
    value = math.nan
    if inputs:
        value = agreement(load_model(run).logits(inputs), load_model(teacher_run).logits(inputs))
    write_json(run / "agreement.json", {"agreement": value, "rows": len(inputs)})


def _train_stage(stages: Stages, name: str, tc: TrainConfig, progress: Progress, *upstream: str,
                 what: str, after: Callable[[], None] | None = None) -> rundir.RunResult:
    def fn() -> None:
        train(tc, progress)
        if after is not None:
            after()

    stages.run(name, run_key(tc, *upstream), [Path(tc.out)], fn, what)
    return rundir.read_result(tc.out)


def _publish(run: Path, out: Path, runs: Sequence[Path], metric: str, seeds: Sequence[int]) -> None:
    """The chosen student's model folder, copied into `out` (metrics.json last: it marks `out` finished)."""
    (out / rundir.METRICS).unlink(missing_ok=True)
    for name in MODEL_FILES:
        if (run / name).exists():
            shutil.copyfile(run / name, out / name)
    if len(runs) > 1:
        values = [rundir.read_result(r).test[metric] for r in runs]
        add_seed_summary([out], metric, values, seeds)


def distill(cfg: DistillConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the recipe into `cfg.out` (see the module docstring); returns the report (report.json's content)."""
    import torch

    progress = default_progress(progress, "step")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.onnx:  # refused now, not after an hour of training
        try:
            export._require_onnx()
        except AftpipeError as e:
            skip = "--no-onnx" if option_name("onnx").startswith("--") else "onnx=False"
            raise AftpipeError(f"{e}, or pass {skip} to skip the export") from None
    r = plan_recipe(cfg)
    out = r.out
    _claim(out)
    stages = Stages(out, progress)

    # 1. the teacher, fine-tuned on the labeled rows; 2. its features over every row
    teacher_run = out / "teacher"
    tt = teacher_train_config(r.teacher, r.base, teacher_run)
    teacher_m = _train_stage(stages, "teacher", tt, progress, what=f"fine-tuning {r.teacher.student} on the labels")
    stores: dict[int, Path] = {}
    for views in r.views:  # the transfer sets: the rows themselves and/or augmented views of them
        ext = _extract_config(r, source(teacher_run), out / "cache", views)
        stores[views] = _store(r, ext)

        def extract_teacher(ext: ExtractConfig = ext) -> None:
            with counting(progress, "ex"):
                extraction.extract(ext, progress)

        stages.run(_store_stage(views), _ext_key(ext, stages.key("teacher")), [stores[views]], extract_teacher,
                   f"the teacher's features over {ext.splits[0]}" + (f" ×{views} views" if views > 1 else "")
                   + f" and {ext.splits[1]}")

    # 3. the students: each candidate (lr, views) with seed 0, scored on the hold-out and by agreement
    inputs: dict[int, list[Any]] = {}

    def agreement_inputs(views: int) -> list[Any]:
        if views not in inputs:
            inputs[views] = _agreement_inputs(r, views) if r.agreement_n else []
        return inputs[views]

    candidates = []
    for views in r.views:
        for lr in cfg.student_lr:
            tc = r.student_config(lr, 0, stores[views], views)
            run = Path(tc.out)
            m = _train_stage(stages, f"student-{_setting(lr, views)}-s0", tc, progress, stages.key(_store_stage(views)),
                             what=f"TOKT into {r.student} (lr {lr:g}{f', {views} views' if views > 1 else ''}, seed 0)",
                             after=lambda run=run, v=views: _score_candidate(run, teacher_run, agreement_inputs(v)))
            agreed = rundir.read_json(run / "agreement.json", "agreement score")
            candidates.append({"lr": lr, "views": views, "holdout": m.holdout[m.metric],
                               "agreement": agreed["agreement"], "agreement_rows": agreed["rows"],
                               "test": m.test[m.metric], "run": str(run)})
    chosen = choose(candidates, cfg.select_by)
    chosen["chosen"] = True
    seeds = list(range(cfg.seeds))
    student_runs = [Path(chosen["run"])]
    best = _setting(chosen["lr"], chosen["views"])
    for seed in seeds[1:]:
        tc = r.student_config(chosen["lr"], seed, stores[chosen["views"]], chosen["views"])
        _train_stage(stages, f"student-{best}-s{seed}", tc, progress, stages.key(_store_stage(chosen["views"])),
                     what=f"TOKT into {r.student} ({best}, seed {seed})")
        student_runs.append(Path(tc.out))

    # 4. the references: a linear probe on the frozen model and the student without transfer
    probe_run, none_runs = None, []
    if cfg.baselines:
        pext, rows = _probe_extract(r)
        pstore = _store(r, pext)

        def extract_frozen() -> None:
            with counting(progress, "ex"):
                extraction.extract(pext, progress, rows)

        # a shared cache: never removed here, and extract itself skips what is finished
        what = "" if rows is None else f" over the {len(rows[r.base.train_split]):,} labeled and every test row"
        stages.run("probe-store", _ext_key(pext, r.teacher.model, *_rows_key(rows)), [pstore], extract_frozen,
                   f"the frozen {r.teacher.model}'s features{what}", owned=False)
        pc = r.probe_config(pstore, stored_rows_only=rows is not None)
        probe_run = Path(pc.out)
        _train_stage(stages, "probe", pc, progress, stages.key("probe-store"),
                     what=f"linear probe on the frozen {r.teacher.model}")
        for seed in seeds:
            nc = r.none_config(seed)
            _train_stage(stages, f"none-s{seed}", nc, progress, what=f"{r.student} without transfer (seed {seed})")
            none_runs.append(Path(nc.out))

    # 5. the student's model folder at `out`, its ONNX export and the report
    metric = teacher_m.metric
    publish_key = stage_key([stages.key(f"student-{best}-s{s}") for s in seeds], cfg.select_by)
    stages.run("publish", publish_key, [out / rundir.METRICS],
               lambda: _publish(student_runs[0], out, student_runs, metric, seeds),
               f"{student_runs[0].name} becomes the model folder {out}", owned=False)
    if cfg.onnx:
        stages.run("onnx", stage_key(publish_key), [out / "onnx"],
                   lambda: export.export_model(out, out / "onnx", overwrite=True, data_dir=cfg.data_dir), "ONNX export")
    report_key = stage_key(publish_key, *(stages.key(n) for n in ("teacher", "probe") if n in stages.state),
                           *(stages.key(f"none-s{s}") for s in seeds if f"none-s{s}" in stages.state), candidates)
    stages.run("report", report_key, [out / "report.json", out / "report.md", out / "README.md"],
               lambda: _write_report(r, teacher_run, student_runs, probe_run, none_runs, candidates, stages),
               "measuring the models and writing report.md", owned=False)
    progress.log(f"distill · done: {out} ({len(stages.ran)} stages computed now, the rest were cached)")
    return json.loads((out / "report.json").read_text())


# --- the report -------------------------------------------------------------------------------------------
def throughput(model: Any, inputs: Sequence[Any], batch_size: int, rows: int) -> float:
    """Inputs per second of `model.logits` at `batch_size` over `rows` inputs (cycled), after one warm-up batch."""
    items = [inputs[i % len(inputs)] for i in range(rows)]
    model.logits(items[:batch_size], batch_size=batch_size)
    t = time.perf_counter()
    model.logits(items, batch_size=batch_size)
    return rows / max(time.perf_counter() - t, 1e-9)


def _size_on_disk(spec: ModelSpec) -> int:
    """Bytes of the weights a model needs at inference: its own, and for a probe its foundation model's."""
    size = spec.weights.bytes
    for s in spec.sources if spec.kind != "student" else ():
        path = Path(s.get("path") or "")
        if s.get("path") and path.is_dir():
            size += sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    return size


def _measure(name: str, what: str, runs: Sequence[Path], folder: Path, inputs: Sequence[Any]) -> dict[str, Any]:
    results = [rundir.read_result(run) for run in runs]
    metric = results[0].metric
    values = [r.test[metric] for r in results]
    mean, std = mean_std(values)
    model = load_model(folder)
    return {"model": name, "what": what, "metric": metric, "test": mean, "std": std if len(values) > 1 else None,
            "seeds": [read_model_spec(run).seed for run in runs], "values": values,
            "params": model.spec.params, "bytes": _size_on_disk(model.spec),
            **{f"per_s_batch{b}": throughput(model, inputs, b, n) for b, n in BENCH_ROWS.items()}}


def _teacher_name(teacher: TeacherConfig) -> str:
    return "MiniLM" if teacher.model == "minilm" else Path(teacher.model.split(":", 1)[1]).name


def _markdown(report: dict[str, Any]) -> str:
    unit = "images" if report["modality"] == "image" else "sentences"
    lines = [f"# {report['out']}: a distilled {report['student']}", "", report["trade_off"] + ".", "",
             (f"Dataset `{report['dataset']}`, test split `{report['test_split']}` ({report['metric']}); "
              + ("every labeled row" if report["labels"] == "every" else f"{report['labels']} labels")
              + f". Speed measured on this machine ({report['machine']})."), "",
             f"| model | test {report['metric']} | parameters | size on disk | {unit}/s at batch 1 | at batch 64 |",
             "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        score = f"{row['test']:.4f}" + (f" ± {row['std']:.4f} ({len(row['values'])} seeds)" if row["std"] is not None
                                        else "")
        lines.append(f"| {row['what']} | {score} | {row['params']:,} | {row['bytes'] / 2**20:.1f} MiB | "
                     f"{row['per_s_batch1']:,.0f} | {row['per_s_batch64']:,.0f} |")
    lines += ["", ("Student settings (seed 0): the hold-out score and the agreement with the teacher on "
                   f"{report['candidates'][0]['agreement_rows']:,} unlabeled rows no student trained on; chosen by "
                   f"{report['select_by']} (the test score is shown, never used to choose)."), "",
              "| lr | views | hold-out | agreement | test | chosen |", "|---|---|---|---|---|---|"]
    for c in report["candidates"]:
        agreed = "–" if math.isnan(c["agreement"]) else f"{c['agreement']:.4f}"  # no unlabeled rows to spare
        test = f"{c['test']:.4f}" if "test" in c else "–"
        lines.append(f"| {c['lr']:g} | {c.get('views', 1)} | {c['holdout']:.4f} | {agreed} | {test} | "
                     f"{'yes' if c.get('chosen') else ''} |")
    lines += ["", "Stage times (computed when this folder was made; cached stages cost nothing on a re-run):", "",
              "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {rec.get('wall_s', float('nan')):.1f} |" for name, rec in report["stages"].items()]
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any]) -> bytes:
    records = []
    for row in report["rows"]:
        for seed, value in zip(row["seeds"], row["values"]):
            records.append(RunRecord(method=row["model"], sources="", student=row["what"], beta=0.0, lr=0.0, seed=seed,
                                     metric=row["metric"], test=value, holdout=math.nan, params=row["params"],
                                     is_probe=row["model"] == "probe"))
    return plot_png(records, title=f"{report['dataset']}: distilled student")


def _write_report(r: Recipe, teacher_run: Path, student_runs: Sequence[Path], probe_run: Path | None,
                  none_runs: Sequence[Path], candidates: list[dict[str, Any]], stages: Stages) -> None:
    import os
    import platform

    out = r.out
    test = r.dataset.split(r.test_split)
    inputs = list(test.inputs[: BENCH_ROWS[64]])
    teacher_name = _teacher_name(r.teacher)
    rows = [_measure("teacher", f"{teacher_name} fine-tuned (teacher)", [teacher_run], teacher_run, inputs),
            _measure("student", f"{r.student} distilled (this folder)", student_runs, out, inputs)]
    if probe_run is not None:
        rows.append(_measure("probe", f"linear probe on the frozen {teacher_name}", [probe_run], probe_run, inputs))
    if none_runs:
        rows.append(_measure("none", f"{r.student} without transfer", none_runs, none_runs[0], inputs))
    teacher, student = rows[0], rows[1]
    sentence = trade_off(student["params"], teacher["params"], f"the fine-tuned {teacher_name}",
                         student["per_s_batch64"] / teacher["per_s_batch64"], teacher["test"] - student["test"])
    report = {"out": str(out), "dataset": r.cfg.dataset, "test_split": r.test_split, "metric": teacher["metric"],
              "labels": r.cfg.labels or "every", "modality": r.modality, "student": r.student,
              "views": next(c["views"] for c in candidates if c.get("chosen")), "views_tried": list(r.views),
              "init_embeddings": r.student_options.init_embeddings, "select_by": r.cfg.select_by,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {r.cfg.threads or 'default'}",
              "trade_off": sentence, "rows": rows, "candidates": candidates,
              "stages": {k: v for k, v in stages.state.items() if k != "report"}}
    write_json(out / "report.json", report)
    write_if_changed(out / "report.md", _markdown(report))
    write_if_changed(out / "report.png", _plot(report))
    card = render_card(read_model_spec(out), out).split("\n", 2)  # title, blank line, the rest
    write_if_changed(out / CARD, "\n".join([card[0], "", f"**{sentence}** (report.md).", *card[1:]]))


__all__ = ["DistillConfig", "Recipe", "Stages", "agreement", "choose", "distill", "plan_recipe", "run_key",
           "stage_key", "throughput", "trade_off"]
