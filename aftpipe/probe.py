"""The linear probe: a classifier head on φ itself, the reference every student tries to approach.

It needs the foundation model at inference (its parameter count includes that model's), so it is a
reference rather than a product. The head is `methods.teacher.fit_linear_head` (scikit-learn's logistic
regression, L2 strength chosen by cross-validation), fitted once per (stores, rows) and reused by every
seed (`aftpipe.heads`), and saved in the run as `head.safetensors` beside `head.json`, the spec that
rebuilds it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aftpipe import rundir
from aftpipe.features import Features, RunData, foundation_params, open_split_features
from aftpipe.heads import fitted_head
from aftpipe.methods import FeatureHead
from aftpipe.methods.teacher import HEAD_SPEC, HEAD_WEIGHTS, load_head, save_head
from aftpipe.metrics import score
from aftpipe.progress import Progress


def predict_head(head: FeatureHead, feats: Features, examples: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(feats(examples)).argmax(-1).numpy()


def fit_probe(features: tuple[str, ...], data: RunData, in_memory: bool, out: Path,
              progress: Progress) -> dict[str, Any]:
    """Fit the probe on the labeled training rows, score it on the hold-out and every test row the stores
    hold, save it to `out`; returns the run's metrics."""
    t_start = time.perf_counter()
    feats, plan = data.features, data.plan  # raw φ: the head standardises it itself (and must, at inference)
    head, origin = fitted_head(feats, features, plan.train, data.train.labels, data.num_classes, progress=progress)
    fit_s = time.perf_counter() - t_start
    test_feats = open_split_features(features, data.dataset, data.test.name, in_memory,
                                     stored_rows_only=data.coverage is not None)
    rows = data.test_rows  # the rows the students of this configuration are scored on
    test_scores = score(predict_head(head, test_feats, rows), data.test.labels[rows], data.metric)
    hold = (score(predict_head(head, feats, plan.holdout), data.train.labels[plan.holdout], data.metric)
            if len(plan.holdout) else {})
    save_head(out, head)
    head_params = sum(p.numel() for p in head.parameters())
    fm = foundation_params(features)
    how = "reused" if origin["cached"] else f"fitted in {fit_s:.1f}s"
    progress.log(f"linear probe (C={head.c:g}, cross-validated; {how}): test {data.metric} "
                 f"{test_scores[data.metric]:.4f} → {rundir.run_dir(out)}")
    return {"test": test_scores, "holdout": hold, "metric": data.metric,
            "params": fm + head_params, "head_params": head_params, "foundation_params": fm,
            "ms_per_step": float("nan"), "wall_s": time.perf_counter() - t_start, "fit_s": fit_s, "history": [],
            "rows": {"train": len(plan.train), "holdout": len(plan.holdout), "test": len(rows),
                     **({"stored_rows_only": data.coverage} if data.coverage else {})},
            "method": {"name": "linear_probe", "c": head.c, "cv_accuracy": {f"{c:g}": a for c, a in head.cv.items()},
                       "head_cache": origin},
            "device": "cpu", "test_split": data.test.name}


__all__ = ["HEAD_SPEC", "HEAD_WEIGHTS", "fit_probe", "load_head", "predict_head", "save_head"]
