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


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn's, on the one-class case
def test_mcc_equals_scikit_learns_on_multiclass_and_degenerate_labels():
    from sklearn.metrics import matthews_corrcoef as sklearn_mcc

    from aftpipe.metrics import matthews_corrcoef

    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 4, 300), rng.integers(0, 4, 300)),  # 4 classes, unrelated
             (np.repeat([0, 1, 2], 50), np.repeat([0, 2, 1], 50)),  # perfectly anti-aligned on two classes
             (np.array([2, 2, 2]), np.array([2, 2, 2])),  # one class only: sklearn's 0
             (np.array([0, 1, 3]), np.array([3, 1, 0]))]  # a class with no rows in between
    y = rng.integers(0, 3, 500)
    cases.append((y, np.where(rng.random(500) < 0.7, y, rng.integers(0, 3, 500))))  # mostly right
    for y, p in cases:
        assert matthews_corrcoef(y, p) == pytest.approx(sklearn_mcc(y, p), abs=1e-12)
