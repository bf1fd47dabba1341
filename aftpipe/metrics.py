"""Test and hold-out scores: accuracy for every dataset, plus Matthews correlation where the dataset's
own metric is MCC (CoLA), both as scikit-learn defines them (MCC in numpy: importing scikit-learn for
one formula cost a training run ~2 s)."""

from __future__ import annotations

import numpy as np


def matthews_corrcoef(y: np.ndarray, pred: np.ndarray) -> float:
    """Matthews correlation of `pred` against `y`, multiclass (Gorodkin 2004), as scikit-learn computes it:
    (c·s − t·p) / sqrt((s² − p·p)(s² − t·t)) over the confusion matrix's correct count c, total s, true
    counts t and predicted counts p per class; 0 where the denominator is 0 (one class only)."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    k = int(max(y.max(initial=0), pred.max(initial=0))) + 1
    t, p = np.bincount(y, minlength=k).astype(np.float64), np.bincount(pred, minlength=k).astype(np.float64)
    c, s = float((y == pred).sum()), float(len(y))
    den = (s * s - p @ p) * (s * s - t @ t)
    return 0.0 if den == 0 else float((c * s - t @ p) / np.sqrt(den))


def score(pred: np.ndarray, y: np.ndarray, metric: str) -> dict[str, float]:
    """{"accuracy": ..., and "mcc" when `metric` is mcc}; NaN for no rows."""
    if len(y) == 0:
        return {"accuracy": float("nan"), **({"mcc": float("nan")} if metric == "mcc" else {})}
    out = {"accuracy": float((pred == y).mean())}
    if metric == "mcc":
        out["mcc"] = matthews_corrcoef(y, pred)
    return out


__all__ = ["matthews_corrcoef", "score"]
