"""Writing files so that a reader, a crash or a second process never sees half of one.

Every JSON and report file aftpipe writes goes through `write_atomic`: the bytes go to a temporary name
beside the target (unique per process, so two writers never share it), are fsynced, then renamed over the
target, which POSIX makes atomic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, data: bytes | str) -> None:
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_path(path: str | Path) -> None:
    """Flush a file, or a folder's entries (so that a rename in it survives a power cut), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: Any) -> None:
    """`obj` as indented, key-sorted JSON (numpy scalars as floats), atomically."""
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=float))


def write_if_changed(path: str | Path, data: str | bytes) -> bool:
    """Write `data` unless `path` already holds exactly it (a finished pipeline re-run touches nothing)."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == raw:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, raw)
    return True
