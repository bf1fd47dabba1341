"""Which training rows are labeled, held out or unlabeled, and φ for any of them from one or more stores.

    plan = plan_rows(examples, split.labels, budget=2000, holdout=0.1, seed=0)   # the same for every seed
    phi = open_split_features(("cache/sst2/minilm", "cache/sst2/tfidf"), dataset, "train")
    phi(plan.train[:128])            # (128, 384 + 256) float32 tensor: the stores' rows side by side

Every store is checked against the dataset before it is used (fingerprint of the rows it holds, N, D,
views): training on features of other data is the silent failure this module exists to prevent.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from aftpipe.config import TrainConfig
from aftpipe.data.base import Dataset, Split
from aftpipe.errors import AftpipeError, option_hint, option_name
from aftpipe.store import FeatureArray, open_features
from aftpipe.store.location import is_remote


@dataclass
class RowPlan:
    """Which train-split examples are labeled-train, hold-out, unlabeled (dataset example indices)."""

    train: np.ndarray
    holdout: np.ndarray
    unlabeled: np.ndarray


def plan_rows(examples: np.ndarray, labels: np.ndarray, budget: int | None, holdout: float, seed: int,
              origin: np.ndarray | None = None) -> RowPlan:
    """Seeded, independent of the training seed: every seed and method sees the same labeled rows.
    `origin[i]` (augmented views) names the example row i is a copy of; copies of hold-out rows are left
    out of the unlabeled rows, so nothing derived from the hold-out is trained on."""
    rng = np.random.default_rng(seed)
    labeled = examples[labels[examples] >= 0]
    unl = examples[labels[examples] < 0]
    perm = rng.permutation(labeled)
    if budget is not None:
        if budget > len(perm):
            raise AftpipeError(f"{option_hint('labels', budget)} is more than the {len(perm)} labeled training rows; "
                               "lower it")
        perm, unl = perm[:budget], np.concatenate([unl, perm[budget:]])
    n_hold = int(round(len(perm) * holdout))
    if holdout > 0 and n_hold == 0 and len(perm) > 1:
        n_hold = 1
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    if len(train) == 0:
        raise AftpipeError(f"no labeled rows are left to train on after the hold-out; lower {option_name('holdout')} "
                           "or add labels")
    if len(classes := np.unique(labels[train])) < 2:  # every method would learn a constant (the probe cannot fit)
        cut = " after the hold-out" if len(hold) else ""
        raise AftpipeError(f"the {len(train):,} labeled rows left to train on{cut} are all of class {int(classes[0])}; "
                           f"a classifier needs at least two classes: label rows of another class (or change "
                           f"{option_name('labels')}, {option_name('holdout')} or {option_name('data_seed')})")
    if origin is not None and len(hold):
        unl = unl[~np.isin(origin[unl], hold)]
    return RowPlan(train, hold, np.sort(unl))



def agreement_split(unlabeled: np.ndarray, n: int, seed: int,
                    origin: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held): `n` original unlabeled rows held out of training, seeded like the row plan, and the
    unlabeled rows without them or their augmented copies. A distilled student's agreement with its teacher
    on the held rows is a score that needs no label (aftpipe distill)."""
    originals = unlabeled if origin is None else unlabeled[origin[unlabeled] == unlabeled]
    rng = np.random.default_rng([seed, 1])  # its own stream: the labeled/hold-out split stays as it was
    held = np.sort(rng.choice(originals, size=min(n, len(originals)), replace=False))
    of = unlabeled if origin is None else origin[unlabeled]
    return unlabeled[~np.isin(of, held)], held

class Features:
    """φ for dataset examples of one split: the stores' rows concatenated, optionally standardised."""

    def __init__(self, arrays: list[FeatureArray], example_to_row: np.ndarray, dims: list[int],
                 identity: list[dict] | None = None) -> None:
        self.arrays, self.example_to_row, self.dims = arrays, example_to_row, dims
        # what each store's rows are: its key, the split's fingerprint and shard checksums (heads are cached by it)
        self.identity = identity or []
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.table: np.ndarray | None = None  # rows that replace the stores' (the gaussian control)
        self.control = "none"

    @property
    def examples(self) -> np.ndarray:
        """The dataset examples every store holds a row for."""
        return np.flatnonzero(self.example_to_row >= 0)

    def __call__(self, examples: np.ndarray) -> torch.Tensor:
        rows = self.example_to_row[examples]
        if self.table is not None:
            phi = self.table[rows]
        else:
            phi = np.concatenate([a.read(rows) for a in self.arrays], axis=1)
        if self.mean is not None:
            phi = (phi - self.mean) / self.std
        return torch.from_numpy(phi)

    def fit_standardizer(self, examples: np.ndarray) -> None:
        x = self.read_all(examples)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6

    def read_all(self, examples: np.ndarray) -> np.ndarray:
        return np.concatenate([self(examples[i:i + 8192]).numpy() for i in range(0, len(examples), 8192)])

    def apply_control(self, kind: str, seed: int = 0) -> None:
        """Replace φ by a control that keeps its statistics and destroys its per-example information
        (docs/design.md §2): `shuffle` gives each example another example's row (a seeded permutation of the
        rows over the examples); `gaussian` gives each one a fresh draw from N(mean, covariance) of φ."""
        if kind == "none":
            return
        self.control = kind
        ex = self.examples
        rng = np.random.default_rng([seed, 7])  # fixed: a control is the same whatever the training seed
        if kind == "shuffle":
            self.example_to_row[ex] = self.example_to_row[rng.permutation(ex)]
            return
        x = self.read_all(ex).astype(np.float64)
        table = rng.multivariate_normal(x.mean(0), np.cov(x, rowvar=False), size=len(x), method="eigh")
        self.table = np.empty((int(self.example_to_row.max()) + 1, x.shape[1]), np.float32)
        self.table[self.example_to_row[ex]] = table


def coverage_error(path: str, held: int, split: Split, limit: int | None) -> AftpipeError:
    why = f" (it was extracted with {option_hint('limit', limit)})" if limit else ""
    return AftpipeError(
        f"store {path} holds {held:,} of the {len(split):,} rows of split `{split.name}`{why}; extract the whole "
        f"split (the same extract without {option_name('limit')}, with {option_hint('overwrite')}) or pass "
        f"{option_hint('stored_rows_only')} to train and test on the rows it holds")


def _held_out(record: dict | None, options_only: bool = False) -> str:
    """How a test split was held out of train (data/splits.py): the options that ask for it, and what it was."""
    if not record:
        return option_hint("test_fraction", 0) if options_only else "no test split held out of train"
    options = f"{option_hint('test_fraction', record['fraction'])} {option_hint('split_seed', record['seed'])}"
    return options if options_only else f"{options} ({record['rows']:,} test rows held out of train)"


def open_split_features(paths: tuple[str, ...], dataset: Dataset, split: str, in_memory: bool = False,
                        stored_rows_only: bool = False) -> Features:
    """Open `split` of every store, checking each against the dataset's rows; refuse any mismatch, and a store
    that holds only some of the split's rows unless `stored_rows_only`."""
    ds_split = dataset.split(split)
    arrays, index, dims, identity = [], None, [], []
    from aftpipe.sources.base import teacher_change

    seen: dict[str, str] = {}  # where each store really is → the path it was given as
    for p in paths:
        store = open_features(p)
        where = str(store.path).rstrip("/") if is_remote(store.path) else os.path.realpath(store.path)
        if where in seen:
            raise AftpipeError(f"the store {where} is given twice ({seen[where]} and {p}), which would feed the same "
                               f"features twice; pass each store once to {option_name('features')}")
        seen[where] = str(p)
        changed = teacher_change(store)  # features of a teacher that has been retrained since: stale
        if changed:
            raise AftpipeError(changed)
        arr = store.split(split, verify=True)
        info = store.split_info(split)
        if store.views != dataset.views:
            raise AftpipeError(f"store {p} was extracted with {option_hint('views', store.views)}, the dataset is "
                               f"loaded with {option_hint('views', dataset.views)}; pass "
                               f"{option_hint('views', store.views)} (or use the store of the other)")
        if arr.index.max(initial=-1) >= len(ds_split):
            raise AftpipeError(f"store {p} split `{split}` has {len(arr)} rows indexing up to {arr.index.max()}, but "
                               f"dataset `{dataset.spec}` has only {len(ds_split)}; it was extracted from other data")
        stored_test = (store.dataset.get("info") or {}).get("test_split")
        if stored_test != dataset.info.get("test_split"):  # the rows differ by rule: say which rule to pass
            raise AftpipeError(f"store {p} was extracted with {_held_out(stored_test)}, dataset `{dataset.spec}` is "
                               f"loaded with {_held_out(dataset.info.get('test_split'))}; pass "
                               f"{_held_out(stored_test, options_only=True)} as that extract did, or extract again")
        fp = ds_split.fingerprint(arr.index)
        if fp != info.fingerprint:
            raise AftpipeError(
                f"store {p} split `{split}` does not match dataset `{dataset.spec}` (store: "
                f"{store.dataset.get('name')}, {info.n}×{info.d}, fingerprint {info.fingerprint[:12]}; "
                f"dataset now: {len(ds_split)} rows, fingerprint {fp[:12]}); re-extract with "
                f"`aftpipe extract --dataset {dataset.spec} --overwrite`"
            )
        if len(np.unique(arr.index)) < len(ds_split) and not stored_rows_only:
            raise coverage_error(p, len(np.unique(arr.index)), ds_split, info.limit)
        if index is not None and not np.array_equal(index, arr.index):
            raise AftpipeError(f"stores {paths[0]} and {p} hold different rows of `{split}`; extract both "
                               "with the same --limit")
        index = arr.index
        arrays.append(arr.to_memory() if in_memory else arr)
        dims.append(arr.shape[1])
        this = {"key": hashlib.sha256(json.dumps(store.key, sort_keys=True).encode()).hexdigest(),
                "split": split, "fingerprint": info.fingerprint, "n": info.n, "d": info.d,
                "shards": hashlib.sha256("".join(s.sha256 or "" for s in info.shards).encode()).hexdigest()}
        if (same := next((paths[i] for i, other in enumerate(identity) if other == this), None)) is not None:
            raise AftpipeError(f"stores {same} and {p} hold the same features (copies of one store); pass one of "
                               f"them to {option_name('features')}")
        identity.append(this)
    example_to_row = np.full(len(ds_split), -1, dtype=np.int64)
    example_to_row[index] = np.arange(len(index))
    return Features(arrays, example_to_row, dims, identity)


def stores_hold(paths: tuple[str, ...], split: str) -> bool:
    """Whether every store has a split of that name (finished or not); read from the manifests only."""
    return all(split in open_features(p).planned_splits for p in paths)


def test_rows(cfg: TrainConfig, dataset: Dataset, test: Split, feats: Features | None = None) -> np.ndarray:
    """The test rows a run is scored on: every row, or with --stored-rows-only the rows the stores hold
    (when they hold the test split), so that the probe, which needs φ, and the students that do not are
    always scored on the same rows."""
    if not (cfg.stored_rows_only and cfg.features and stores_hold(cfg.features, test.name)):
        return np.arange(len(test))
    if feats is None:
        feats = open_split_features(cfg.features, dataset, test.name, stored_rows_only=True)
    return feats.examples


def check_labels(train: Split, test: Split, num_classes: int) -> None:
    """Refuse labels a run cannot use: a class id outside 0..num_classes-1 in either split, and test rows
    without a label (scoring them as wrong would understate every method)."""
    for split in (train, test):
        bad = np.flatnonzero(split.labels >= num_classes)
        if len(bad):
            raise AftpipeError(f"split `{split.name}` row {int(bad[0])} ({split.ids[bad[0]]}) has label "
                               f"{int(split.labels[bad[0]])}, outside 0..{num_classes - 1}; fix the label or raise "
                               f"{option_hint('num_classes', 'N')}")
    unlabeled = np.flatnonzero(test.labels < 0)
    if len(unlabeled):
        raise AftpipeError(f"test split `{test.name}` has {len(unlabeled):,} of {len(test):,} rows without a label "
                           f"(first: {test.ids[unlabeled[0]]}); label them, remove them, or pass "
                           f"{option_hint('test_split', 'NAME')} with a labelled split")


@dataclass
class RunData:
    """What one run trains and is scored on: the dataset, its train and test splits, the row plan, the
    number of classes, and φ of the train split (None for a method that reads no features)."""

    dataset: Dataset
    train: Split
    test: Split
    plan: RowPlan
    num_classes: int
    features: Features | None
    test_rows: np.ndarray  # the test rows every method of the run is scored on
    coverage: dict[str, list[int]] | None = None  # split → [rows held, rows in the split] with --stored-rows-only

    @property
    def metric(self) -> str:
        return self.dataset.metric


def foundation_params(paths: tuple[str, ...]) -> int:
    """Parameters of the models behind the stores (0 for those that record none)."""
    total = 0
    for p in paths:
        try:
            total += open_features(p).foundation_params
        except AftpipeError:
            pass
    return total


__all__ = ["Features", "RowPlan", "RunData", "agreement_split", "check_labels", "coverage_error", "foundation_params",
           "open_split_features", "plan_rows", "stores_hold", "test_rows"]
