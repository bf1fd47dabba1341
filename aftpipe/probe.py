"""The linear probe: a classifier head on φ itself, the reference every student tries to approach.

A recipe of its own: `aftpipe.api.train` sends `method="linear_probe"` (`PROBE`, registered in the method
registry so that `--method linear_probe` and a pipeline's `name: linear_probe` validate) to `train_probe`,
which fits the head in a run folder made as a student's is (`training.run_folder`). It needs the foundation
model at inference (its parameter count includes that model's), so it is a reference rather than a product.
The head is `methods.teacher.fit_linear_head` (scikit-learn's logistic regression, L2 strength chosen by
cross-validation), fitted once per (stores, rows) and reused by every seed (`aftpipe.heads`), and saved in
the run as `head.safetensors` beside `head.json`, the spec that rebuilds it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from aftpipe import distributed, rundir
from aftpipe.config import TrainConfig
from aftpipe.features import Features, RunData, foundation_params, open_split_features
from aftpipe.heads import fitted_head
from aftpipe.methods import FeatureHead
from aftpipe.methods.simple import LinearProbe
from aftpipe.methods.teacher import HEAD_SPEC, HEAD_WEIGHTS, load_head, save_head
from aftpipe.metrics import score
from aftpipe.progress import Progress, default_progress
from aftpipe.rundir import RunResult
from aftpipe.tracking import RunLog, check_trackers
from aftpipe.training import run_folder

PROBE = LinearProbe.name  # the method name that selects this recipe
PROBE_STUDENT = "head"  # what a results table shows as the probe's student: a linear head on φ itself


def predict_head(head: FeatureHead, feats: Features, examples: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(feats(examples)).argmax(-1).numpy()


def train_probe(cfg: TrainConfig, progress: Progress | None = None) -> RunResult:
    """Fit the probe of `cfg` (its stores, rows and test split) into the run folder `cfg.out`; returns the result.
    Launched as several processes, rank 0 fits it (a closed-form fit: nothing to share) and all return its result."""
    progress = default_progress(progress, "step")
    check_trackers(cfg.report_to)

    def fit(data: RunData, work: Path) -> tuple[RunResult, None]:
        result = fit_probe(cfg.features, data, cfg.in_memory, work, progress)
        with RunLog(work, cfg.report_to, cfg.to_dict()) as log:
            log.log({"step": 0, **{f"holdout_{k}": v for k, v in result.holdout.items()},
                     **{f"test_{k}": v for k, v in result.test.items()}})
        return result, None

    with distributed.launch(cfg.device, cfg.dist_timeout) as ctx:
        return ctx.from_main("fitting the linear probe", lambda: run_folder(cfg, progress, fit, standardize=False))


def fit_probe(features: tuple[str, ...], data: RunData, in_memory: bool, out: Path,
              progress: Progress) -> RunResult:
    """Fit the probe on the labeled training rows, score it on the hold-out and every test row the stores
    hold, save it to `out`; returns the run's result."""
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
    return RunResult(test=test_scores, holdout=hold, metric=data.metric, params=fm + head_params, head_params=head_params,
                     foundation_params=fm, fit_s=fit_s, history=[],
                     rows={"train": len(plan.train), "holdout": len(plan.holdout), "test": len(rows),
                           **({"stored_rows_only": data.coverage} if data.coverage else {})},
                     method={"name": PROBE, "c": head.c, "cv_accuracy": {f"{c:g}": a for c, a in head.cv.items()},
                             "head_cache": origin},
                     device="cpu", test_split=data.test.name)


__all__ = ["HEAD_SPEC", "HEAD_WEIGHTS", "PROBE", "PROBE_STUDENT", "fit_probe", "load_head", "predict_head", "save_head",
           "train_probe"]
