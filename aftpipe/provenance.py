"""A run's record of where it came from: what ran it, when, with which packages, from which commit, on
which stores. Stored under `record` in metrics.json, so a result can be traced and reproduced:

    {"created": "2026-11-24T10:02:11+00:00", "command": "aftpipe train --dataset sst2 ...",
     "git": {"commit": "5e37fe0…", "dirty": false}, "packages": {"aftpipe": "0.1.0", "torch": ...},
     "stores": [{"path": "cache/sst2/minilm", "manifest_sha256": "…",
                 "splits": {"train": {"fingerprint": "…", "n": 67349, "d": 384}, ...}}]}

`command` is the command line when the run came from the `aftpipe` CLI (which says so through
`running_command`), else None; `argv` is the process's own arguments either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

_COMMAND: ContextVar[str | None] = ContextVar("aftpipe_command", default=None)


@contextlib.contextmanager
def running_command(argv: Sequence[str]) -> Iterator[None]:
    """Within this block, runs record `argv` as the command that made them (the CLI wraps each command in it)."""
    token = _COMMAND.set(shlex.join(argv))
    try:
        yield
    finally:
        _COMMAND.reset(token)


def command() -> str | None:
    return _COMMAND.get()


def git_state(folder: str | Path = ".") -> dict[str, Any] | None:
    """The commit checked out in `folder`'s repository and whether its tracked files have changes; None outside
    a repository (or without git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    from aftpipe.store.manifest import STORE_PACKAGES
    from aftpipe.store.manifest import package_versions as installed

    extra = ("tokenizers", "safetensors", "datasets", "tensorboard", "wandb")
    return {"python": platform.python_version(), **installed(STORE_PACKAGES + extra)}


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest as canonical JSON (sorted keys): the same manifest, the same hash, whatever
    the backend stores it as."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def store_record(path: str, splits: Sequence[str]) -> dict[str, Any]:
    from aftpipe.store import open_features

    store = open_features(path)
    infos = {i.name: i for i in store.split_infos()}
    return {"path": str(path), "manifest_sha256": manifest_sha256(store.manifest),
            "splits": {s: {"fingerprint": infos[s].fingerprint, "n": infos[s].n, "d": infos[s].d}
                       for s in dict.fromkeys(splits) if s in infos}}


def run_record(features: Sequence[str], splits: Sequence[str]) -> dict[str, Any]:
    """The record of a run that read `splits` of the stores `features`."""
    from aftpipe.cpu_kernels import in_effect
    from aftpipe.store.manifest import host, now

    return {"created": now(), "command": command(), "argv": list(sys.argv), "cwd": str(Path.cwd()),
            "host": host(), "cpu_kernels": in_effect(), "git": git_state(), "packages": package_versions(),
            "stores": [store_record(p, splits) for p in features]}


__all__ = ["command", "git_state", "manifest_sha256", "package_versions", "run_record", "running_command", "store_record"]
