import numpy as np
import pytest

from aftpipe.metrics import score


def test_mcc_matches_the_textbook_binary_formula():
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p = np.array([1, 0, 1, 0, 0, 1, 1, 0])
    tp, tn, fp, fn = 3, 3, 1, 1
    expect = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert score(p, y, "mcc") == {"accuracy": pytest.approx(6 / 8), "mcc": pytest.approx(expect)}
    assert score(np.zeros(8, int), y, "mcc")["mcc"] == 0.0  # a constant prediction carries no correlation


def test_accuracy_only_unless_the_dataset_scores_mcc_and_nan_for_no_rows():
    assert score(np.array([1, 0]), np.array([1, 1]), "accuracy") == {"accuracy": 0.5}
    empty = score(np.array([], int), np.array([], int), "mcc")
    assert set(empty) == {"accuracy", "mcc"} and all(np.isnan(v) for v in empty.values())
