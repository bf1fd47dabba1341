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


def test_plan_rows_refuses_a_train_set_of_one_class():
    labels = np.array([1] * 30 + [0] * 2 + [-1] * 5)
    with pytest.raises(AftpipeError, match="the 30 labeled rows left to train on are all of class 1"):
        plan_rows(np.arange(30), labels, budget=None, holdout=0.0, seed=0)
    p = plan_rows(np.arange(len(labels)), labels, budget=None, holdout=0.0, seed=0)  # one row of another class: fine
    assert set(labels[p.train]) == {0, 1}
    with pytest.raises(AftpipeError, match="after the hold-out are all of class 1"):  # the hold-out took both 0s
        plan_rows(np.arange(len(labels)), labels, budget=None, holdout=0.5, seed=_seed_holding_out_both(labels))


def _seed_holding_out_both(labels):
    for seed in range(100):
        rng = np.random.default_rng(seed)
        perm = rng.permutation(np.flatnonzero(labels >= 0))
        if set(perm[:16]) >= {30, 31}:
            return seed
    raise AssertionError("no seed holds out both rows of class 0")


def _features(n=400, d=6, seed=0):
    from aftpipe.features import Features
    from aftpipe.store.array import FeatureArray

    x = (np.random.default_rng(seed).standard_normal((n, d)) @ np.diag(np.arange(1, d + 1))).astype(np.float32)
    index = np.arange(n)
    return Features([FeatureArray([x], n, index, "float32")], index.copy(), [d]), x


def test_shuffle_control_keeps_every_row_but_not_whose_it_is():
    feats, x = _features()
    feats.apply_control("shuffle")
    got = feats(np.arange(400)).numpy()
    assert sorted(map(tuple, got)) == sorted(map(tuple, x))  # the same rows: the same statistics
    assert (got == x).all(axis=1).mean() < 0.02  # almost no example keeps its own row
    again, _ = _features()
    again.apply_control("shuffle", seed=0)
    assert np.array_equal(again(np.arange(400)).numpy(), got)  # fixed: the same whatever the training seed


def test_gaussian_control_matches_mean_and_covariance_only():
    feats, x = _features(n=4000)
    feats.apply_control("gaussian")
    got = feats(np.arange(4000)).numpy()
    np.testing.assert_allclose(got.mean(0), x.mean(0), atol=0.15)
    np.testing.assert_allclose(np.cov(got, rowvar=False), np.cov(x, rowvar=False), atol=0.25 * np.var(x, 0).max() ** 0.5)
    assert abs(np.corrcoef(got[:, -1], x[:, -1])[0, 1]) < 0.05  # nothing of each example's own row is left


def test_a_control_needs_a_transfer_term_to_control():
    from aftpipe.components import resolve
    from aftpipe.config import ConfigError, TrainConfig

    for method in ("none", "linear_probe"):
        with pytest.raises(ConfigError, match=f"^phi_control: method `{method}` has no transfer term to control"):
            resolve(TrainConfig(dataset="sst2", out="r", features=("s",), method=method, phi_control="shuffle"))
    assert resolve(TrainConfig(dataset="sst2", out="r", features=("s",), method="aft", phi_control="gaussian"))
