"""Where a run's numbers go while it trains: `metrics.jsonl` in the run folder, always, and the experiment
trackers named by `report_to` (TensorBoard, Weights & Biases), each an optional package.

One row per evaluation, the same row everywhere:

    {"step": 120, "epoch": 8.0, "loss": 0.51, "ce": 0.49, "reg": 0.02, "lr": 0.0028, "holdout_accuracy": 0.78, ...}

and a last row with the test scores. metrics.jsonl grows as the run trains, so `tail -f` and a plotting
script can follow it; metrics.json is still the run's finished record. A resumed run first drops the rows
written after its checkpoint (a kill between a row and its checkpoint would otherwise leave a row twice),
and TensorBoard purges its events after that step the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

from aftpipe.errors import AftpipeError, option_hint

METRICS_LOG = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}  # tracker → (module, extra)


def check_trackers(report_to: tuple[str, ...]) -> None:
    """Refuse a tracker whose package is not installed, before anything is computed."""
    for name in report_to:
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise AftpipeError(f"{option_hint('report_to', name)} needs the `{module}` package; "
                               f"`pip install 'aftpipe[{extra}]'` or drop it")


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _tag(key: str) -> str:
    """`holdout_accuracy` → `holdout/accuracy`, `loss` → `train/loss`: TensorBoard groups by the prefix."""
    for prefix in ("holdout", "test"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1:]}"
    return f"train/{key}"


class JsonlLog:
    def __init__(self, out: Path, resume_step: int | None) -> None:
        self.path = out / METRICS_LOG
        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a kill: it and anything after it go
                if row.get("step", 0) > resume_step:
                    break
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))
        self._f = self.path.open("a")

    def log(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, default=float) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoardLog:
    def __init__(self, out: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / TENSORBOARD_DIR), purge_step=resume_step)

    def log(self, row: dict[str, Any]) -> None:
        for k, v in _numbers(row).items():
            self.writer.add_scalar(_tag(k), v, global_step=int(row["step"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLog:
    """A W&B run named after the run folder, files under it; its id is derived from the folder, so a
    resumed run continues the same W&B run. `WANDB_MODE=offline` keeps it on disk; `WANDB_PROJECT` names
    the project (default `aftpipe`)."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        import wandb

        run_id = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "aftpipe"), name=out.name, id=run_id,
                              dir=str(out), config=config, resume="allow", reinit="create_new")

    def log(self, row: dict[str, Any]) -> None:
        self.run.log({_tag(k): v for k, v in _numbers(row).items()}, step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


class RunLog:
    """Every sink of one run: `log(row)` writes the row to each, `close()` closes them."""

    def __init__(self, out: Path, report_to: tuple[str, ...] = (), config: dict[str, Any] | None = None,
                 resume_step: int | None = None) -> None:
        check_trackers(report_to)
        self.sinks: list[Any] = [JsonlLog(out, resume_step)]
        for name in dict.fromkeys(report_to):
            self.sinks.append(TensorBoardLog(out, resume_step) if name == "tensorboard" else WandbLog(out, config or {}))

    def log(self, row: dict[str, Any]) -> None:
        for s in self.sinks:
            s.log(row)

    def close(self) -> None:
        for s in self.sinks:
            s.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_log(run: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl."""
    path = Path(run) / METRICS_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


__all__ = ["METRICS_LOG", "RunLog", "TENSORBOARD_DIR", "check_trackers", "read_log"]
