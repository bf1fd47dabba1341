"""Heads on cached features are fitted once per (stores, rows, labels, options) and reused from disk."""

import numpy as np
import pytest
import torch

from aftpipe.config import DatasetOptions, ExtractConfig
from aftpipe.data import load_dataset
from aftpipe.extraction import extract
from aftpipe.features import open_split_features
from aftpipe.heads import cache_folder, fitted_head, head_key
from aftpipe.sources import SourceOptions


@pytest.fixture
def feats(tmp_path, reviews_tsv):
    whole = DatasetOptions(test_fraction=0)  # every row of the file is a train row here
    extract(ExtractConfig(dataset=f"tsv:{reviews_tsv}", sources=("tfidf",), cache_dir=str(tmp_path / "cache"),
                          source_options=SourceOptions(tfidf_dim=16), dataset_options=whole, name="reviews"))
    ds = load_dataset(f"tsv:{reviews_tsv}", options=whole)
    store = str(tmp_path / "cache" / "reviews" / "tfidf")
    return open_split_features((store,), ds, "train"), store, ds.split("train").labels


def test_a_head_is_fitted_once_and_then_read_back(feats, monkeypatch):
    f, store, labels = feats
    rows = np.arange(0, 300, 3)
    head, first = fitted_head(f, (store,), rows, labels, 2)
    assert first["cached"] is False and first["folder"].startswith(str(cache_folder((store,))))
    assert cache_folder((store,)).parent.name == "reviews"  # beside the store: cache/<dataset>/heads
    import aftpipe.heads as heads

    monkeypatch.setattr(heads, "fit_linear_head", lambda *a, **k: pytest.fail("refitted a cached head"))
    again, second = fitted_head(f, (store,), rows, labels, 2, seed=7)  # the linear head is seed-free
    assert second == {**first, "cached": True}
    x = f(rows)
    assert torch.equal(head(x), again(x)) and again.c == head.c and again.cv == head.cv


def test_the_key_changes_with_everything_the_head_depends_on(feats):
    f, _, labels = feats
    rows = np.arange(0, 300, 3)
    key = head_key(f, rows, labels, 2, hidden=0, seed=0)
    assert head_key(f, rows, labels, 2, hidden=0, seed=5) == key
    flipped = labels.copy()
    flipped[rows[0]] = 1 - flipped[rows[0]]
    others = [head_key(f, rows[1:], labels, 2, 0, 0), head_key(f, rows, flipped, 2, 0, 0),
              head_key(f, rows, labels, 3, 0, 0), head_key(f, rows, labels, 2, 16, 0),
              head_key(f, rows, labels, 2, 0, 0, grid=(0.1, 1.0))]
    assert len({key, *others}) == 6
    assert head_key(f, rows, labels, 2, 16, 0) != head_key(f, rows, labels, 2, 16, 1)  # the MLP is seeded
    f.fit_standardizer(rows)
    assert head_key(f, rows, labels, 2, 0, 0) != key  # standardised φ is another input


def test_the_cache_folder_can_move_and_an_unwritable_one_only_costs_the_reuse(feats, tmp_path, monkeypatch):
    f, store, labels = feats
    rows = np.arange(100)
    monkeypatch.setenv("AFTPIPE_HEAD_CACHE", str(tmp_path / "elsewhere"))
    _, where = fitted_head(f, (store,), rows, labels, 2)
    assert where["folder"].startswith(str(tmp_path / "elsewhere"))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, so no folder can be made here")
    monkeypatch.setenv("AFTPIPE_HEAD_CACHE", str(blocked))
    head, where = fitted_head(f, (store,), rows, labels, 2)
    assert where["cached"] is False and where["folder"] is None and head.c in head.cv


def test_a_control_is_part_of_the_heads_key():
    import numpy as np

    from aftpipe.features import Features
    from aftpipe.heads import head_key
    from aftpipe.store.array import FeatureArray

    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    def feats():
        f = Features([FeatureArray([x], 50, np.arange(50), "float32")], np.arange(50), [4])
        f.identity = ["store-a"]
        return f
    rows, labels = np.arange(40), np.arange(50) % 2
    plain, shuffled = feats(), feats()
    shuffled.apply_control("shuffle")
    assert head_key(plain, rows, labels, 2, 0, 0) != head_key(shuffled, rows, labels, 2, 0, 0)
    assert head_key(plain, rows, labels, 2, 0, 0) == head_key(feats(), rows, labels, 2, 0, 0)
