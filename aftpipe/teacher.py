"""A fine-tuned teacher: a foundation model trained whole on the labeled rows, then read as a feature source.

The strongest small students here come from a teacher that has seen the labels (BENCHMARKS "Regime 3"): the
foundation model is fine-tuned like any `hf:`/`timm:` student (`method: none`, the hold-out choosing its
checkpoint), and the finished run is the `model:<run>` source the small student is distilled from. Both
`aftpipe distill` and a pipeline's `teachers:` train it here, so they train the same teacher from the same
settings (`TeacherConfig`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aftpipe.config import TeacherConfig, TrainConfig
from aftpipe.errors import AftpipeError
from aftpipe.progress import Progress
from aftpipe.rundir import RunResult

PREFIX = "teacher:"  # a pipeline source naming one of its `teachers:`


def check_teacher(teacher: TeacherConfig) -> None:
    """Refuse a teacher whose weights are not here, before anything trains."""
    from aftpipe.sources import check_source

    try:
        check_source(teacher.model)
    except AftpipeError as e:
        raise AftpipeError(f"teacher `{teacher.model}` cannot be fine-tuned: {e}") from None


def teacher_train_config(teacher: TeacherConfig, base: TrainConfig, out: str | Path) -> TrainConfig:
    """The teacher's run at `out`: `base`'s rows (labels, hold-out, test split) with the teacher's settings."""
    return dataclasses.replace(teacher.train_config(base), out=str(out), resume=True)


def fine_tune(teacher: TeacherConfig, base: TrainConfig, out: str | Path,
              progress: Progress | None = None) -> RunResult:
    """Train the teacher run at `out` (an interrupted one resumes, a finished one is read back); its result."""
    from aftpipe.training import train

    return train(teacher_train_config(teacher, base, out), progress)


def source(run: str | Path) -> str:
    """The finished teacher run as a feature source: its penultimate features."""
    return f"model:{run}"


__all__ = ["PREFIX", "check_teacher", "fine_tune", "source", "teacher_train_config"]
