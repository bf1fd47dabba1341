import numpy as np
import pytest

from aftpipe.errors import AftpipeError
from aftpipe.features import plan_rows


def test_plan_rows_is_seeded_disjoint_and_keeps_a_holdout_row():
    labels = np.array([0, 1] * 50 + [-1] * 20)
    examples = np.arange(len(labels))
    p = plan_rows(examples, labels, budget=30, holdout=0.1, seed=0)
    assert (len(p.train), len(p.holdout), len(p.unlabeled)) == (27, 3, 90)  # 70 unused labels join the unlabeled
    assert not set(p.train) & set(p.holdout) and not (set(p.train) | set(p.holdout)) & set(p.unlabeled)
    again = plan_rows(examples, labels, budget=30, holdout=0.1, seed=0)
    assert np.array_equal(p.train, again.train) and np.array_equal(p.holdout, again.holdout)
    assert not np.array_equal(p.holdout, plan_rows(examples, labels, budget=30, holdout=0.1, seed=1).holdout)
    assert len(plan_rows(examples, labels, budget=4, holdout=0.1, seed=0).holdout) == 1  # 0.4 rounds to 0, kept at 1
    assert len(plan_rows(examples, labels, budget=None, holdout=0.0, seed=0).holdout) == 0


def test_plan_rows_refuses_an_impossible_budget():
    labels = np.array([0, 1, 0, -1])
    with pytest.raises(AftpipeError, match="labels=5 is more than the 3 labeled training rows"):
        plan_rows(np.arange(4), labels, budget=5, holdout=0.1, seed=0)
    with pytest.raises(AftpipeError, match="no labeled rows are left"):
        plan_rows(np.arange(4), labels, budget=None, holdout=0.9, seed=0)
