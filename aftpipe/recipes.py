"""Which recipe trains a run, chosen once: the linear probe fits a head on the foundation model's features
(aftpipe.probe); every other method trains a student (aftpipe.training). The API, sweeps and `distill` all
train through here, so a run means the same thing whichever of them started it."""

from __future__ import annotations

from aftpipe import training
from aftpipe.components import resolve
from aftpipe.config import TrainConfig
from aftpipe.probe import PROBE, train_probe
from aftpipe.progress import Progress
from aftpipe.rundir import RunResult


def train(cfg: TrainConfig, progress: Progress | None = None) -> RunResult:
    """One run into `cfg.out`: a student trained with `cfg.method`, or the linear probe fitted; its names are
    resolved first, so an unknown one is refused before anything runs."""
    cfg = resolve(cfg)
    return (train_probe if cfg.method == PROBE else training.train)(cfg, progress)
