"""Score a finished run again from what its directory holds: the check that a saved model is the one
that was measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aftpipe import rundir
from aftpipe.config import TrainConfig, load_config
from aftpipe.data import load_dataset
from aftpipe.features import open_split_features
from aftpipe.methods import METHODS
from aftpipe.metrics import score
from aftpipe.training import predict


def evaluate(run_dir: str | Path) -> dict[str, float]:
    """Reload a finished run's student (or probe head) and score it on its test split again."""
    from aftpipe.probe import load_head, predict_head
    from aftpipe.students import rebuild_student

    run = Path(run_dir)
    metrics = rundir.read_metrics(run)
    cfg = load_config(TrainConfig, run / rundir.CONFIG)
    dataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.dataset_options)
    test = dataset.split(metrics["test_split"])
    if not METHODS.get(cfg.method).uses_student:
        feats = open_split_features(cfg.features, dataset, test.name)
        rows = feats.examples
        return score(predict_head(load_head(run), feats, rows), test.labels[rows], dataset.metric)
    from safetensors.torch import load_file

    student = rebuild_student(json.loads((run / "student.json").read_text()))
    student.load_state_dict(load_file(str(run / "student.safetensors")))
    pred = predict(student, student.encode(test.inputs), np.arange(len(test)), torch.device("cpu"))
    return score(pred, test.labels, dataset.metric)


def check_run(run_dir: str | Path) -> dict[str, Any]:
    """`evaluate` next to the scores metrics.json recorded: {"test", "recorded", "match"}."""
    got = evaluate(run_dir)
    saved = rundir.read_metrics(run_dir)["test"]
    return {"test": got, "recorded": saved, "match": all(abs(got[k] - saved[k]) < 1e-9 for k in got)}


__all__ = ["check_run", "evaluate"]
