"""The run directory: what one training run leaves behind, and the rules for starting, resuming and reusing it.

    config.yaml     the TrainConfig, written before training starts
    checkpoint.pt   while training: weights, optimizer, RNG and loop state (removed at the end)
    metrics.json    written last: its presence is what "this run finished" means
    student.safetensors + student.json (head.safetensors + head.json for the probe)

`config_diff` serves both callers that compare a saved config with a new one, under different rules:
`train --resume` may extend a run (steps, epochs and patience shape only what is still to come), while a
pipeline reusing a finished run must match everything that shaped its result.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

from aftpipe.errors import AftpipeError, option_hint
from aftpipe.fileio import write_json

CONFIG, METRICS, CHECKPOINT = "config.yaml", "metrics.json", "checkpoint.pt"
# where things are and how fast to run, never what is computed
RUNTIME_ONLY = frozenset({"out", "data_dir", "resume", "overwrite", "device", "threads", "in_memory", "report_to"})
EXTENDABLE = frozenset({"steps", "epochs", "patience"})  # what a resumed run may change


def is_finished(run: str | Path) -> bool:
    return (Path(run) / METRICS).exists()


def read_metrics(run: str | Path) -> dict[str, Any]:
    if not is_finished(run):
        raise AftpipeError(f"{run} holds no finished run (no {METRICS}); train one with `aftpipe train --out {run}`")
    return json.loads((Path(run) / METRICS).read_text())


def read_config_dict(run: str | Path) -> dict[str, Any] | None:
    """The saved config.yaml as plain data, None when there is none."""
    from aftpipe.config import load_yaml

    path = Path(run) / CONFIG
    return (load_yaml(path, "run config") or {}) if path.exists() else None


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: Collection[str]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every top-level key outside `ignore` that differs, sorted by key."""
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if k not in ignore and old.get(k) != new.get(k)]


def prepare(out: str | Path, resume: bool, overwrite: bool) -> Path | None:
    """Create the run directory; None when it holds a finished run and `resume` was asked (nothing to do).
    A finished or unfinished run is never replaced without `overwrite`."""
    out = Path(out)
    if is_finished(out):
        if resume and not overwrite:
            return None
        if not overwrite:
            raise AftpipeError(f"{out} already holds a finished run; pass {option_hint('overwrite')} to replace it or "
                               f"choose another {option_hint('out', 'DIR')}")
        shutil.rmtree(out)
    elif (out / CHECKPOINT).exists() and not resume and not overwrite:
        raise AftpipeError(f"{out} holds an unfinished run; pass {option_hint('resume')} to continue it or "
                           f"{option_hint('overwrite')} to restart")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").write_text("")
        (out / ".write-test").unlink()
    except OSError as e:
        raise AftpipeError(f"cannot write the run directory {out} ({e.strerror}); pass a writable "
                           f"{option_hint('out', 'DIR')}") from None
    return out


def check_resumable(out: Path, new: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint that was trained with other settings."""
    saved = read_config_dict(out)
    if saved is None or not (out / CHECKPOINT).exists():
        return
    for k, old, now in config_diff(saved, new, RUNTIME_ONLY | EXTENDABLE)[:1]:
        raise AftpipeError(f"{out} was started with {k}={old!r}, now {now!r}; resume with the same options or pass "
                           f"{option_hint('overwrite')} to start again")


def save_checkpoint(out: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = out / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out / CHECKPOINT)  # a kill mid-save leaves the previous checkpoint intact


def load_checkpoint(out: Path, device: Any) -> dict[str, Any] | None:
    import torch

    path = out / CHECKPOINT
    return torch.load(path, map_location=device, weights_only=False) if path.exists() else None


def finish(out: Path, metrics: dict[str, Any]) -> None:
    """Write metrics.json (last: its presence means the run finished) and drop the checkpoint."""
    write_json(out / METRICS, metrics)
    (out / CHECKPOINT).unlink(missing_ok=True)
