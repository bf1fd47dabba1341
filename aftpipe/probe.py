"""The linear probe: a classifier head on φ itself, the reference every student tries to approach.

It needs the foundation model at inference (its parameter count includes that model's), so it is a
reference rather than a product. The head is `methods.teacher.fit_linear_head` (L2 strength chosen by
cross-validation), saved as `head.safetensors` beside `head.json`, the spec that rebuilds it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aftpipe.features import Features, RunData, foundation_params, open_split_features
from aftpipe.methods import FeatureHead, fit_linear_head
from aftpipe.metrics import score
from aftpipe.progress import Progress

HEAD_WEIGHTS, HEAD_SPEC = "head.safetensors", "head.json"


def predict_head(head: FeatureHead, feats: Features, examples: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(feats(examples)).argmax(-1).numpy()


def save_head(out: Path, head: FeatureHead) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / HEAD_WEIGHTS))
    spec = {"in_dim": head.mean.numel(), "num_classes": head.num_classes, "hidden": head.hidden, "c": head.c}
    (out / HEAD_SPEC).write_text(json.dumps(spec, sort_keys=True))


def load_head(run: Path) -> FeatureHead:
    from safetensors.torch import load_file

    spec = json.loads((run / HEAD_SPEC).read_text())
    head = FeatureHead(spec["in_dim"], spec["num_classes"], spec["hidden"])
    head.load_state_dict(load_file(str(run / HEAD_WEIGHTS)))
    head.c = spec["c"]
    return head.eval()


def fit_probe(features: tuple[str, ...], data: RunData, seed: int, in_memory: bool, out: Path,
              progress: Progress) -> dict[str, Any]:
    """Fit the probe on the labeled training rows, score it on the hold-out and every test row the stores
    hold, save it to `out`; returns the run's metrics."""
    t_start = time.perf_counter()
    feats, plan = data.features, data.plan  # raw φ: the head standardises it itself (and must, at inference)
    head = fit_linear_head(feats(plan.train), torch.from_numpy(data.train.labels[plan.train]), data.num_classes,
                           seed=seed)
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
    chosen = "cross-validated" if head.cv else "given"
    progress.log(f"linear probe (C={head.c:g}, {chosen}): test {data.metric} {test_scores[data.metric]:.4f} → {out}")
    return {"test": test_scores, "holdout": hold, "metric": data.metric,
            "params": fm + head_params, "head_params": head_params, "foundation_params": fm,
            "ms_per_step": float("nan"), "wall_s": time.perf_counter() - t_start, "fit_s": fit_s, "history": [],
            "rows": {"train": len(plan.train), "holdout": len(plan.holdout), "test": len(rows),
                     **({"stored_rows_only": data.coverage} if data.coverage else {})},
            "method": {"name": "linear_probe", "c": head.c, "cv_accuracy": {f"{c:g}": a for c, a in head.cv.items()}},
            "device": "cpu", "test_split": data.test.name}


__all__ = ["fit_probe", "load_head", "predict_head", "save_head"]
