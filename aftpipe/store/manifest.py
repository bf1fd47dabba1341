"""The manifest: a store's provenance and completion state, as one JSON document.

It lives in the store itself (zarr: root group attribute `aftpipe`; HDF5: root attribute `aftpipe`, as a
JSON string) so that a store copied anywhere carries its own history. Completion is the per-shard `done`
list with checksums, never "the file exists": zarr does not write shards that equal the fill value, and a
killed writer can leave a file behind that holds half a shard.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import platform
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MANIFEST_KEY = "aftpipe"

# bf16 has no numpy dtype: it is stored as its raw uint16 bit pattern and widened on read.
STORAGE_DTYPES = {"float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4")}
# NaN fill: real features are never all-NaN, so unwritten rows are visible and zarr never skips a chunk.
FILL_VALUES = {"float16": np.float16("nan"), "bfloat16": np.uint16(0x7FC0), "float32": np.float32("nan")}


def sha256_bytes(data: bytes | memoryview | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        data = memoryview(np.ascontiguousarray(data)).cast("B")
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("aftpipe", "torch", "transformers", "timm", "zarr", "h5py", "numpy", "scikit-learn"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def host() -> str:
    return platform.node()


def shard_ranges(n: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)] or [(0, 0)]


def new_split_entry(n: int, d: int, fingerprint: str, shard_rows: int) -> dict[str, Any]:
    return {
        "n": n,
        "d": d,
        "fingerprint": fingerprint,
        "shards": [{"rows": [a, b], "sha256": None, "done": False} for a, b in shard_ranges(n, shard_rows)],
        "complete": False,
        "wall_s": 0.0,
    }


def split_complete(entry: dict[str, Any]) -> bool:
    return all(s["done"] for s in entry["shards"])


def describe_key_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """First differing leaf between two store keys, as `path: old → new`, for one-line errors."""
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return describe_key_difference(a, b, f"{prefix}{k}.")
        short = lambda v: (str(v)[:60] + "…") if len(str(v)) > 60 else str(v)  # noqa: E731
        return f"{prefix}{k}: {short(a)} → {short(b)}"
    return "(no difference)"
