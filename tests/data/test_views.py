"""Augmented views: seeded word-level copies appended to the train split as unlabeled rows."""

import numpy as np
import pytest

from aftpipe.data import DatasetOptions, load_dataset
from aftpipe.data.base import Dataset, Split
from aftpipe.data.views import augment_text, with_views
from aftpipe.errors import AftpipeError
from aftpipe.features import plan_rows


def text_dataset(n=20):
    tr = Split("train", [f"t{i}" for i in range(n)], [f"the plot of film {i} was not good at all" for i in range(n)],
               np.arange(n) % 2)
    te = Split("test", ["x"], ["a test row"], [1])
    return Dataset("tsv:/d/reviews", "text", {"train": tr, "test": te}, num_classes=2)


def test_a_view_is_an_ordered_subset_of_the_words_and_seeded():
    text = "one two three four five six seven eight nine ten"
    a = augment_text(text, np.random.default_rng([1, 7]))
    assert a == augment_text(text, np.random.default_rng([1, 7]))
    words = text.split()
    kept = a.split()
    assert 0 < len(kept) < len(words)
    positions = [words.index(w) for w in kept]
    assert positions == sorted(positions)  # order kept, nothing invented
    views = {augment_text(text, np.random.default_rng([v, 7])) for v in range(1, 9)}
    assert len(views) > 4  # the view index changes the copy
    assert augment_text("word", np.random.default_rng(0)) == "word"  # never empties a row
    assert augment_text("", np.random.default_rng(0)) == ""


def test_views_append_unlabeled_copies_and_leave_the_originals_alone():
    ds = text_dataset()
    v = with_views(ds, 3)
    tr, orig = v.split("train"), ds.split("train")
    assert len(tr) == 60 and v.split("test") is ds.split("test")
    assert tr.fingerprint(range(20)) == orig.fingerprint()  # rows 0..N-1 are the originals
    assert (tr.labels[:20] == orig.labels).all() and (tr.labels[20:] == -1).all()
    assert tr.ids[25] == "t5~view1" and tr.origin[25] == 5 and tr.origin[45] == 5 and tr.origin[3] == 3
    assert v.name == "reviews-views3" and ds.name == "reviews"  # a K-view dataset has its own stores
    assert with_views(ds, 3).split("train").fingerprint() == tr.fingerprint()  # deterministic
    assert with_views(ds, 1) is ds


def test_bad_views_are_refused():
    with pytest.raises(AftpipeError, match="views: must be ≥ 1"):
        DatasetOptions(views=0)
    img = Dataset("digits", "image", {"train": Split("train", ["a"], [np.zeros((2, 2), np.uint8)], [0])}, 10)
    with pytest.raises(AftpipeError, match="augments text.*Drop `views`"):
        with_views(img, 2)


def test_copies_of_hold_out_rows_are_not_trained_on():
    v = with_views(text_dataset(), 3).split("train")
    plan = plan_rows(np.arange(len(v)), v.labels, None, 0.2, seed=0, origin=v.origin)
    assert len(plan.holdout) == 4 and len(plan.train) == 16
    assert not np.isin(v.origin[plan.unlabeled], plan.holdout).any()
    assert set(v.origin[plan.unlabeled]) == set(plan.train) and len(plan.unlabeled) == 32
    # the labeled / hold-out rows are those of the dataset without views
    plain = plan_rows(np.arange(20), v.labels[:20], None, 0.2, seed=0)
    assert (plain.train == plan.train).all() and (plain.holdout == plan.holdout).all()


def test_load_dataset_applies_the_views_option(tmp_path):
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "".join(f"row number {i} here\t{i % 2}\n" for i in range(5)))
    ds = load_dataset(f"tsv:{tmp_path}", options=DatasetOptions(views=4))
    # one of the five rows is the held-out test split: views copy only the four left to train on
    assert len(ds.split("train")) == 16 and len(ds.test()) == 1 and ds.views == 4 and ds.info["views"] == 4
