"""Test and hold-out scores: accuracy for every dataset, plus Matthews correlation where the dataset's
own metric is MCC (CoLA), both as scikit-learn defines them."""

from __future__ import annotations

import numpy as np


def score(pred: np.ndarray, y: np.ndarray, metric: str) -> dict[str, float]:
    """{"accuracy": ..., and "mcc" when `metric` is mcc}; NaN for no rows."""
    from sklearn.metrics import matthews_corrcoef

    if len(y) == 0:
        return {"accuracy": float("nan"), **({"mcc": float("nan")} if metric == "mcc" else {})}
    out = {"accuracy": float((pred == y).mean())}
    if metric == "mcc":
        out["mcc"] = float(matthews_corrcoef(y, pred))
    return out


__all__ = ["score"]
