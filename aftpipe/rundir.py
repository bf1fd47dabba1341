"""The run directory: what one training run leaves behind, and the rules for starting, resuming and reusing it.

    <out>/                    a finished run, and nothing else ever has this name:
        config.yaml           the TrainConfig
        metrics.json          the result (`RunResult`); its presence is what "this run finished" means
        student.safetensors + student.json (head.safetensors + head.json for the probe)
    <out>.partial/            the run while it is being trained: config.yaml, checkpoint.safetensors
    <out>.lock                held while a process writes either (one writer per run folder)

A run is built in `<out>.partial` and renamed to `<out>` when it finishes, so a crashed, failed or
interrupted train never leaves a half-made `<out>`. The partial folder is the resumable state: `--resume`
continues from its checkpoint, and it is kept after a failure only when it holds one (a run that failed before
its first checkpoint leaves nothing behind). Replacing a finished run with `--overwrite` keeps the old one in
place until the new one is complete.

Checkpoints are one safetensors file: the tensors (weights, optimizer moments, RNG states) as tensors and
everything else (loop state, scheduler, optimizer settings) as JSON in the file's header. Nothing in a run
directory is ever unpickled, so a run folder someone hands you cannot run code.

`config_diff` serves both callers that compare a saved config with a new one, under different rules:
`train --resume` may extend a run (steps, epochs and patience shape only what is still to come), while a
pipeline reusing a finished run must match everything that shaped its result.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aftpipe.errors import AftpipeError, option_hint
from aftpipe.fileio import fsync_path, write_atomic, write_json

CONFIG, METRICS, CHECKPOINT = "config.yaml", "metrics.json", "checkpoint.safetensors"
# an `aftpipe distill` folder: a run folder (the chosen student) that also holds the runs it was made from
DISTILL_STAGES = "stages.json"
LEGACY_CHECKPOINT = "checkpoint.pt"  # a pickle, written by aftpipe before 0.2; refused, never loaded
PARTIAL = ".partial"
# where things are and how fast to run, never what is computed
RUNTIME_ONLY = frozenset({"out", "data_dir", "resume", "overwrite", "device", "threads", "in_memory", "report_to",
                          "dist_timeout"})
EXTENDABLE = frozenset({"steps", "epochs", "patience"})  # what a resumed run may change


def is_finished(run: str | Path) -> bool:
    return (Path(run) / METRICS).exists()


def work_dir(out: str | Path) -> Path:
    """Where the run `out` is built and resumed from until it finishes."""
    out = Path(out)
    return out.with_name(out.name + PARTIAL)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise AftpipeError(f"{path} is missing, so {path.parent} is not a complete run; train it again with "
                           f"{option_hint('overwrite')}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AftpipeError(f"cannot read {what} {path} ({e}); train the run again with {option_hint('overwrite')}") from None


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(_read(path, what))
    except ValueError as e:
        raise AftpipeError(f"{what} {path} is not valid JSON ({e}); train the run again with "
                           f"{option_hint('overwrite')}") from None


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports: metrics.json, typed. `to_json`/`from_json` keep the file's format (the
    same keys, so the same bytes); a field a run kind does not record is None and left out of the file (the
    probe has no steps or regulariser, a student no head), and older files load with the defaults."""

    metric: str  # accuracy | mcc: the score `test` and `holdout` are read by
    test: dict[str, float]  # every score on the test split
    holdout: dict[str, float]  # the same on the hold-out of the labeled rows; {} without one
    test_split: str
    method: dict[str, Any] = field(default_factory=dict)  # name, β and the method's own facts (AFT's σ, the probe's C)
    params: int = 0  # the student's; for the probe, the foundation model's plus the head's
    foundation_params: int = 0
    rows: dict[str, Any] = field(default_factory=dict)  # train, holdout, unlabeled and test row counts
    device: str = "cpu"
    ms_per_step: float = math.nan
    wall_s: float = math.nan
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation
    record: dict[str, Any] = field(default_factory=dict)  # provenance (aftpipe.provenance.run_record)
    steps: int | None = None  # a student's: optimizer steps taken, and the one whose weights were kept
    best_step: int | None = None
    regulariser: dict[str, float] | None = None  # the hold-out transfer term at the first and last evaluation
    phi_control: str | None = None
    select: str | None = None
    head_params: int | None = None  # the probe's: its head alone, and the time to fit it
    fit_s: float | None = None

    @property
    def score(self) -> float:
        """The test score of the run's metric."""
        return float(self.test[self.metric])

    @property
    def holdout_score(self) -> float:
        return float(self.holdout.get(self.metric, math.nan))

    @property
    def is_probe(self) -> bool:
        return self.head_params is not None  # the probe alone fits a head on φ itself

    @property
    def sigma(self) -> dict[str, float]:
        """AFT's mean σ(s) per source, by store name."""
        out = {}
        for i, src in enumerate(self.method.get("sources", []) or []):
            if isinstance(src, dict) and "sigma_mean" in src:
                store = Path(str(src.get("store", f"source{i}"))).name
                out[store.removesuffix(".h5")] = float(src["sigma_mean"])
        return out

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, doc: Any) -> RunResult:
        """A result from a parsed metrics.json; ValueError when it lacks what every reader needs."""
        if (not isinstance(doc, dict) or not isinstance(doc.get("test"), dict) or "test_split" not in doc
                or doc.get("metric") not in doc["test"]):
            raise ValueError("lacks its `test` scores, the `metric` they are read by or `test_split`")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {"holdout": {}, **doc}.items() if k in names})


def read_result(run: str | Path) -> RunResult:
    if not is_finished(run):
        raise AftpipeError(f"{run} holds no finished run (no {METRICS}); train one with {option_hint('out', str(run))}")
    try:
        return RunResult.from_json(read_json(Path(run) / METRICS, "the metrics file"))
    except ValueError as e:
        raise AftpipeError(f"the metrics file {Path(run) / METRICS} {e}; train the run again with "
                           f"{option_hint('overwrite')}") from None


def read_config_dict(run: str | Path) -> dict[str, Any] | None:
    """The saved config.yaml as plain data, None when there is none."""
    from aftpipe.config import load_yaml

    path = Path(run) / CONFIG
    return (load_yaml(path, "run config") or {}) if path.exists() else None


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: Collection[str]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every top-level key outside `ignore` that differs, sorted by key."""
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if k not in ignore and old.get(k) != new.get(k)]


# --- writing a run ------------------------------------------------------------------------------------------
@contextmanager
def writing(out: str | Path, resume: bool, overwrite: bool) -> Iterator[Path | None]:
    """Lock the run folder `out` and yield the directory to train in: `<out>.partial`, fresh, or holding the
    checkpoint of an interrupted run when `resume`. Yields None when `out` is finished and `resume` asked
    (nothing to do). A finished or unfinished run is never replaced without `overwrite`. `finish` publishes
    the run; if the block fails, the partial folder is kept only when it holds a checkpoint to resume from."""
    from aftpipe.store import WriterLock

    out = checked_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AftpipeError(f"cannot create the run directory {out} ({e.strerror}); pass a writable "
                           f"{option_hint('out', 'DIR')}") from None
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise AftpipeError(f"cannot write the run directory {out} (its parent is not a writable folder); pass a "
                           f"writable {option_hint('out', 'DIR')}")
    with WriterLock(out, "run folder", f"or pass another {option_hint('out', 'DIR')}"):
        work = work_dir(out)
        if is_finished(out):
            if resume and not overwrite:
                yield None
                return
            if not overwrite:
                raise AftpipeError(f"{out} already holds a finished run; pass {option_hint('overwrite')} to replace it "
                                   f"or choose another {option_hint('out', 'DIR')}")
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            if (out / LEGACY_CHECKPOINT).exists():
                if not overwrite:
                    raise AftpipeError(f"{out} holds a {LEGACY_CHECKPOINT} written by an older aftpipe (a pickle, "
                                       f"which aftpipe never loads); delete the folder or pass "
                                       f"{option_hint('overwrite')} to train the run again")
            else:  # not a run folder: --overwrite replaces run folders, never someone's other files
                raise AftpipeError(f"{out} exists but holds no finished run (no {METRICS}) and is not an aftpipe run "
                                   f"folder, which {option_hint('overwrite')} alone may replace; move it away or "
                                   f"choose another {option_hint('out', 'DIR')}")
        if work.exists():
            if overwrite or not (work / CHECKPOINT).exists():
                shutil.rmtree(work)  # a run replaced, or one that failed before its first checkpoint
            elif not resume:
                raise AftpipeError(f"{out} holds an unfinished run ({work.name}); pass {option_hint('resume')} to "
                                   f"continue it or {option_hint('overwrite')} to restart")
        try:
            work.mkdir(exist_ok=True)
        except OSError as e:
            raise AftpipeError(f"cannot write the run directory {work} ({e.strerror}); pass a writable "
                               f"{option_hint('out', 'DIR')}") from None
        try:
            yield work
        except BaseException as e:
            if work.is_dir() and not (work / CHECKPOINT).exists():
                shutil.rmtree(work, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise AftpipeError(f"cannot write the run directory {work} ({e.strerror}); free some space (or fix "
                                   f"its permissions) and train again ({option_hint('resume')} continues from the "
                                   "last checkpoint)") from None
            raise


def checked_out(out: str | Path) -> Path:
    """`out` as an absolute path, refused where publishing a run there could fail after training or put it
    inside something else: a symbolic link that leads nowhere (missing target, loop), a feature store, or
    another run folder. A link to an existing folder is followed (the run goes where it points)."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    if out.name in ("", ".", ".."):
        raise AftpipeError(f"{option_hint('out', str(out))} names no run folder; pass a path such as runs/my-run")
    if out.is_symlink():
        try:
            out = out.resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: a loop, on Pythons before 3.13
            raise AftpipeError(f"{option_hint('out', str(out))} is a symbolic link to a missing path (or a loop of "
                               f"links), where no run can be published; remove the link or pass another "
                               f"{option_hint('out', 'DIR')}") from None
    for owner in owners(out):  # not refused: an ONNX export, and a `distill` folder (its teacher and candidates)
        if owner.kind == "feature store":
            raise AftpipeError(f"{option_hint('out', str(out))} is inside {owner}, which "
                               f"`extract {option_hint('overwrite')}` would rebuild; pass an "
                               f"{option_hint('out', 'DIR')} outside it")
        if owner.kind == "run folder" and not owner.holds_runs:
            raise AftpipeError(f"{option_hint('out', str(out))} is inside {owner}, which "
                               f"{option_hint('overwrite')} would replace; pass an {option_hint('out', 'DIR')} "
                               "outside it")
    return out


@dataclass(frozen=True)
class Owner:
    """An aftpipe folder that a path lies in: the files there are aftpipe's."""

    kind: str  # "run folder", "ONNX export" or "feature store"
    folder: Path
    holds_runs: bool = False  # an `aftpipe distill` folder: a run folder that keeps the runs it was made from

    def __str__(self) -> str:
        return f"the {self.kind} {self.folder}"


def owners(path: Path) -> Iterator[Owner]:
    """The aftpipe folders that `path` lies in, nearest first, among the folders above it as they really are
    (links resolved): run folders (finished or being trained), ONNX exports and zarr feature stores (an HDF5
    store is a file, so nothing lies in it)."""
    from aftpipe.store.zarr_store import looks_like_store

    real = Path(os.path.realpath(path.parent))
    for folder in (real, *real.parents):
        try:
            if not folder.is_dir():
                continue
            if (folder / CONFIG).is_file() and (is_finished(folder) or folder.name.endswith(PARTIAL)):
                yield Owner("run folder", folder, holds_runs=(folder / DISTILL_STAGES).is_file())
            elif (folder / "model.onnx").is_file():
                yield Owner("ONNX export", folder)
            elif looks_like_store(folder):
                yield Owner("feature store", folder)
        except OSError:  # an ancestor we may not list is no aftpipe folder of ours
            continue


def check_resumable(work: Path, new: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint that was trained with other settings."""
    saved = read_config_dict(work)
    if saved is None or not (work / CHECKPOINT).exists():
        return
    for k, old, now in config_diff(saved, new, RUNTIME_ONLY | EXTENDABLE)[:1]:
        raise AftpipeError(f"{work} was started with {k}={old!r}, now {now!r}; resume with the same options or pass "
                           f"{option_hint('overwrite')} to start again")


def run_dir(work: Path) -> Path:
    """The run's own folder, for the work folder `work_dir` gave (the name users see and pass around)."""
    return work.with_name(work.name.removesuffix(PARTIAL))


def write_config(work: Path, text: str) -> None:
    _write(work, lambda: write_atomic(work / CONFIG, text))


def finish(work: Path, result: RunResult) -> Path:
    """Write metrics.json, rename the work folder to the run's name and only then drop the checkpoint (a
    rename that fails leaves the run resumable); returns the run folder."""
    out = run_dir(work)

    def publish() -> None:
        write_json(work / METRICS, result.to_json())
        old = out.with_name(f"{out.name}.replaced-{os.getpid()}")
        if out.exists():  # --overwrite: the old run stays whole until the new one is ready
            os.rename(out, old)
        try:
            os.rename(work, out)
        except OSError:
            if old.exists():
                os.rename(old, out)  # the old run back in its place
            raise
        (out / CHECKPOINT).unlink(missing_ok=True)
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        fsync_path(out.parent)

    _write(work, publish)
    return out


def _write(work: Path, fn: Any) -> None:
    try:
        fn()
    except OSError as e:
        raise AftpipeError(f"cannot write the run directory {work} ({e.strerror or e}); free some space (or fix "
                           f"its permissions) and continue with {option_hint('resume')}") from None


# --- checkpoints ------------------------------------------------------------------------------------------
def pack(obj: Any, path: str = "", tensors: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """(JSON tree, tensors) for a nest of dicts, lists, tuples, tensors, numpy arrays and JSON scalars.
    Tensors are replaced by {"$tensor": name}; tuples, numpy arrays and dicts whose keys are not all
    strings are tagged so `unpack` gives back exactly the same structure."""
    import numpy as np
    import torch

    tensors = {} if tensors is None else tensors

    def slot(name: str) -> str:
        name = name or "root"
        return name if name not in tensors else f"{name}#{len(tensors)}"

    if isinstance(obj, torch.Tensor):
        name = slot(path)
        tensors[name] = obj.detach().to("cpu", copy=True).contiguous()  # a copy: safetensors refuses shared storage
        return {"$tensor": name}, tensors
    if isinstance(obj, np.ndarray):
        name = slot(path)
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"$ndarray": name}, tensors
    if isinstance(obj, np.generic):
        return obj.item(), tensors
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: pack(v, f"{path}.{k}" if path else k, tensors)[0] for k, v in obj.items()}, tensors
        return {"$items": [[pack(k, "", {})[0], pack(v, f"{path}.{k}" if path else str(k), tensors)[0]]
                           for k, v in obj.items()]}, tensors
    if isinstance(obj, tuple):
        return {"$tuple": [pack(v, f"{path}.{i}", tensors)[0] for i, v in enumerate(obj)]}, tensors
    if isinstance(obj, list):
        return [pack(v, f"{path}.{i}", tensors)[0] for i, v in enumerate(obj)], tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {path or 'the root'}")


def unpack(tree: Any, tensors: dict[str, Any]) -> Any:
    """The inverse of `pack`."""
    if isinstance(tree, list):
        return [unpack(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "$tensor" in tree:
        return tensors[tree["$tensor"]]
    if "$ndarray" in tree:
        return tensors[tree["$ndarray"]].numpy()
    if "$tuple" in tree:
        return tuple(unpack(v, tensors) for v in tree["$tuple"])
    if "$items" in tree:
        return {unpack(k, tensors): unpack(v, tensors) for k, v in tree["$items"]}
    return {k: unpack(v, tensors) for k, v in tree.items()}


def save_checkpoint(work: Path, state: Any) -> None:
    """`state` as `work/checkpoint.safetensors`, atomically: a kill mid-save leaves the previous one intact."""
    from safetensors.torch import save_file

    tree, tensors = pack(state)
    tmp = work / f".{CHECKPOINT}.{os.getpid()}.tmp"

    def save() -> None:
        try:
            save_file(tensors, str(tmp), metadata={"aftpipe": json.dumps(tree)})
            fsync_path(tmp)
            os.replace(tmp, work / CHECKPOINT)
        finally:
            tmp.unlink(missing_ok=True)

    _write(work, save)


def load_checkpoint(work: Path) -> Any | None:
    """The state `save_checkpoint` wrote (tensors on the CPU), None when there is no checkpoint."""
    from safetensors import SafetensorError, safe_open

    path = work / CHECKPOINT
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tree = json.loads((f.metadata() or {})["aftpipe"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return unpack(tree, tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise AftpipeError(f"the checkpoint {path} is damaged ({first}); pass {option_hint('overwrite')} to train "
                           "the run again") from None
