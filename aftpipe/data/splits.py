"""A test split held out of `train`, for datasets that come as one block of rows (a single file).

    dataset = with_test_split(dataset, fraction=0.2, seed=0)   # train → train (80%) + test (20%)

A dataset that has only a `train` split gets one by default (`DEFAULT_TEST_FRACTION` of its labelled rows);
`test_fraction` asks for it explicitly, on any dataset without a split already named `test` (0: never). The rows are
stratified by label, so a rare class is in both parts, and chosen by a seeded permutation per class: the same
fraction and seed give the same rows on every machine and in every command (extract, train, run), which is
what lets a store extracted once be checked against the rows a later run trains on. Unlabelled rows stay in
`train` (a test row needs a label). Both parts keep the file's order, and their ids still name the file's lines.

The split is recorded in the dataset's `info` (and so in every store's key and every run's record), and the
store folder a dataset is cached under is named by it (`Dataset.name`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aftpipe.data.base import Dataset, Split, raw_bytes
from aftpipe.errors import AftpipeError, option_hint, option_name

DEFAULT_TEST_FRACTION = 0.2  # the share scikit-learn's and most tutorials' hold-outs use
DEFAULT_SPLIT_SEED = 0


def stratified_test_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The rows (ascending) that form the test part: round(fraction · labelled rows) in all, shared between the
    classes in proportion to their size (largest remainder, ties to the lower class id), each class's rows
    drawn by a permutation seeded with (seed, class id). Our own rather than scikit-learn's
    StratifiedShuffleSplit, whose rows are not promised to stay the same across its releases: here the rows
    are part of a store's fingerprint."""
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    quota = counts * fraction
    take = np.floor(quota).astype(np.int64)
    short = round(float(counts.sum()) * fraction) - int(take.sum())
    for i in sorted(range(len(classes)), key=lambda i: (-(quota[i] - take[i]), i))[:max(short, 0)]:
        take[i] += 1
    picked = [np.random.default_rng([seed, int(c)]).permutation(np.flatnonzero(labels == c))[:k]
              for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


class _Rows(Sequence[Any]):
    """Some rows of a lazy input sequence (images read on access), still lazy."""

    def __init__(self, inputs: Sequence[Any], rows: np.ndarray) -> None:
        self.inputs, self.rows = inputs, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return _Rows(self.inputs, self.rows[i])
        return self.inputs[int(self.rows[i])]

    def raw_bytes(self, i: int) -> bytes:
        return raw_bytes(self.inputs, int(self.rows[i]))


def take_rows(split: Split, rows: np.ndarray, name: str) -> Split:
    """Rows `rows` of `split` as a split called `name`, ids and inputs as they were."""
    inputs = [split.inputs[int(i)] for i in rows] if isinstance(split.inputs, list) else _Rows(split.inputs, rows)
    return split.subset(rows, name, inputs)


def with_test_split(dataset: Dataset, fraction: float | None, seed: int = DEFAULT_SPLIT_SEED) -> Dataset:
    """`dataset` with `fraction` of its labelled `train` rows moved to a new `test` split (stratified, seeded);
    `fraction` None: DEFAULT_TEST_FRACTION when `train` is its only split, else the dataset as it is; 0: as it is."""
    asked = fraction is not None
    if fraction == 0:  # asked for none: a file used whole, e.g. as unlabelled text or to predict on
        return dataset
    if not asked:
        if list(dataset.splits) != ["train"]:
            return dataset
        fraction = DEFAULT_TEST_FRACTION
    elif "test" in dataset.splits:
        raise AftpipeError(f"dataset `{dataset.spec}` already has a `test` split; drop {option_name('test_fraction')} "
                           f"(or pass {option_hint('test_split', 'NAME')} to score another split)")
    train = dataset.split("train")
    test_rows = stratified_test_rows(train.labels, fraction, seed)
    labelled = int((train.labels >= 0).sum())
    problem = ("is no row at all; raise" if len(test_rows) == 0 else
               "leaves none to train on; lower" if len(test_rows) == labelled else None)
    if problem is not None:
        if not asked:  # a few rows to look at, not to train on: left whole, and `train` says what is missing
            return dataset
        raise AftpipeError(f"{option_hint('test_fraction', fraction)} of the {labelled} labelled rows of dataset "
                           f"`{dataset.spec}` {problem} {option_name('test_fraction')} or add rows")
    train_rows = np.setdiff1d(np.arange(len(train)), test_rows)
    splits = {name: s for name, s in dataset.splits.items() if name != "train"}
    splits = {"train": take_rows(train, train_rows, "train"), "test": take_rows(train, test_rows, "test"), **splits}
    held = {"from": "train", "fraction": fraction, "seed": seed, "rows": len(test_rows)}
    return Dataset(spec=dataset.spec, modality=dataset.modality, splits=splits, num_classes=dataset.num_classes,
                   metric=dataset.metric, class_names=dataset.class_names, info={**dataset.info, "test_split": held},
                   views=dataset.views, test_split="test", location=dataset.location)


__all__ = ["DEFAULT_SPLIT_SEED", "DEFAULT_TEST_FRACTION", "stratified_test_rows", "take_rows", "with_test_split"]
