"""Heads on cached features, fitted once and kept on disk: the linear probe and the kd_logit/tokt teacher.

A head depends only on its inputs: the stores' rows (each store's key, split fingerprint and shard
checksums), which rows were labeled with what, any standardisation of φ, and the head's options. Those are
hashed into a key, the fitted head is saved under `<cache>/<key>/`, and every later run with that key
loads it instead of fitting. The linear head does not depend on the training seed (scikit-learn, fixed
folds), so the probe's seeds and the kd_logit/tokt teachers on the same rows share one fit; an MLP teacher
is seeded, and its seed is part of its key.

Where: `heads/` beside the first store, i.e. `<cache-dir>/<dataset>/heads/<key>/`. The heads live, move
and are deleted with the features they were fitted on (`make clean-cache`), and every run reading those
stores, from any run folder or pipeline, finds them. `$AFTPIPE_HEAD_CACHE` puts them elsewhere (for a
read-only shared cache); where neither is writable the head is fitted and not kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from aftpipe.features import Features
from aftpipe.methods.teacher import C_GRID, FeatureHead, default_folds, fit_linear_head, load_head, save_head
from aftpipe.progress import Progress, SilentProgress

KEY_VERSION = 1  # bump when the fitting changes what a key's head would be


def cache_folder(features: Sequence[str]) -> Path | None:
    """Where heads on these stores are kept: $AFTPIPE_HEAD_CACHE, else `heads/` beside the first store (for a
    store on object storage, beside its shards in the local read-through cache)."""
    from aftpipe.store.location import cache_folder as local_copy
    from aftpipe.store.location import is_remote, location

    env = os.environ.get("AFTPIPE_HEAD_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    if not features:
        return None
    first = location(features[0])
    return local_copy(first) / "heads" if is_remote(first) else first.parent / "heads"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def head_key(feats: Features, rows: np.ndarray, labels: np.ndarray, num_classes: int, hidden: int, seed: int,
             grid: tuple[float, ...] = C_GRID, folds: int | None = None) -> str:
    """The hash of everything a head fitted on `feats(rows)` with `labels[rows]` depends on."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    sklearn = importlib.metadata.version("scikit-learn").split(".")[:2]
    standardiser = None
    if feats.mean is not None:
        standardiser = _sha(np.ascontiguousarray(feats.mean).tobytes() + np.ascontiguousarray(feats.std).tobytes())
    key = {
        "version": KEY_VERSION, "stores": feats.identity, "rows": _sha(rows.tobytes()),
        "labels": _sha(np.ascontiguousarray(labels[rows], dtype=np.int64).tobytes()), "standardiser": standardiser,
        "num_classes": num_classes, "hidden": hidden, "grid": list(grid), "folds": folds or default_folds(len(rows)),
        # the linear head is scikit-learn's and seed-free; the MLP is torch's and seeded
        "solver": f"sklearn-{'.'.join(sklearn)}" if hidden == 0 else f"torch-adam-seed{seed}",
        **({"control": feats.control} if feats.control != "none" else {}),  # a control's φ is other rows
    }
    return _sha(json.dumps(key, sort_keys=True).encode())[:32]


def _keep(folder: Path, key: str, head: FeatureHead) -> bool:
    """Save `head` as `folder/key/` atomically (a temporary folder renamed into place); False if unwritable."""
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        save_head(tmp, head)
        os.replace(tmp, folder / key)
    except OSError:  # read-only cache, or another process kept the same head first
        shutil.rmtree(tmp, ignore_errors=True)
        return (folder / key).is_dir()
    return True


def fitted_head(feats: Features, features: Sequence[str], rows: np.ndarray, labels: np.ndarray, num_classes: int, *,
                hidden: int = 0, seed: int = 0, progress: Progress | None = None) -> tuple[FeatureHead, dict[str, Any]]:
    """The head on `feats(rows)` with `labels[rows]`: loaded from the cache when it holds it, else fitted
    (`fit_linear_head`) and kept. Returns the head (in eval mode, on the CPU) and where it came from
    (`{"key": ..., "cached": bool, "folder": ...}`)."""
    progress = progress or SilentProgress()
    key = head_key(feats, rows, labels, num_classes, hidden, seed)
    folder = cache_folder(features) if feats.identity else None  # rows of unknown origin: no key can name them
    head = _load(folder, key, progress)
    if head is None:
        with _fitting(folder, key):  # runs of a sweep wanting this head at once: one fits it, the others load it
            head = _load(folder, key, progress)
            if head is None:
                head = fit_linear_head(feats(rows), torch.from_numpy(labels[rows]), num_classes, hidden=hidden,
                                       seed=seed)
                kept = folder is not None and _keep(folder, key, head)
                return head, {"key": key, "cached": False, "folder": str(folder / key) if kept else None}
    return head, {"key": key, "cached": True, "folder": str(folder / key)}


def _load(folder: Path | None, key: str, progress: Progress) -> FeatureHead | None:
    """The cached head `key`, or None; an unreadable one is removed (and fitted again)."""
    if folder is None or not (folder / key).is_dir():
        return None
    try:
        head = load_head(folder / key)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        shutil.rmtree(folder / key, ignore_errors=True)
        return None
    progress.log(f"head: reusing {folder / key}")
    return head


@contextlib.contextmanager
def _fitting(folder: Path | None, key: str) -> Iterator[None]:
    """Held while this process fits head `key`: another process that wants the same head waits for it, then
    loads it (flock: the kernel releases it if the holder dies). Without a writable cache, no lock."""
    fd = None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f".{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            pass
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


__all__ = ["cache_folder", "fitted_head", "head_key"]
