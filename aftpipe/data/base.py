"""What a dataset is to aftpipe: named splits of (id, input, label) rows in a stable order.

The order is the contract with the feature store: row i of a store's split holds the features of example
`split.index[i]`. The fingerprint (a hash of the ordered ids and raw inputs) is how stage 2 checks that the
rows it trains on are the rows that were extracted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aftpipe.errors import AftpipeError, option_hint

Modality = Literal["text", "image"]


def raw_bytes(inputs: Sequence[Any], i: int) -> bytes:
    """The raw bytes of input i, as hashed by the fingerprint (file bytes for lazy images)."""
    if hasattr(inputs, "raw_bytes"):
        return inputs.raw_bytes(i)  # type: ignore[attr-defined]
    x = inputs[i]
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, np.ndarray):
        return repr((x.shape, x.dtype.str)).encode() + np.ascontiguousarray(x).tobytes()
    raise TypeError(f"cannot fingerprint an input of type {type(x).__name__}")


@dataclass
class Split:
    """One split. `inputs[i]` is a str (text) or an image (PIL.Image or HxW[xC] uint8 array);
    `labels[i]` is an int class id, -1 when unlabeled; `ids[i]` names the example in its source file.
    `origin[i]` is the row that row i is an augmented view of (itself for an original; None: no views)."""

    name: str
    ids: list[str]
    inputs: Sequence[Any]
    labels: np.ndarray
    origin: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not (len(self.ids) == len(self.inputs) == len(self.labels)):
            raise ValueError(f"split {self.name}: ids, inputs and labels differ in length")
        if self.origin is not None and len(self.origin) != len(self.labels):
            raise ValueError(f"split {self.name}: origin and labels differ in length")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray, name: str, inputs: Sequence[Any]) -> Split:
        """Rows `rows` of this split as the split `name`, with `inputs` already taken from them (data/splits.py)."""
        if self.origin is not None:
            raise ValueError(f"split {self.name}: rows of a split with augmented views cannot be taken apart")
        return Split(name, [self.ids[int(i)] for i in rows], inputs, self.labels[rows])

    def fingerprint(self, rows: Sequence[int] | np.ndarray | None = None) -> str:
        """sha256 over the ordered (id, raw input) of `rows` (all rows by default)."""
        h = hashlib.sha256()
        for i in range(len(self)) if rows is None else rows:
            i = int(i)
            for part in (self.ids[i].encode("utf-8"), raw_bytes(self.inputs, i)):
                h.update(len(part).to_bytes(8, "little"))  # length-prefixed: ("ab","c") != ("a","bc")
                h.update(part)
        return h.hexdigest()


@dataclass
class Dataset:
    """A loaded dataset. `spec` is what the user typed (`sst2`, `tsv:my.tsv`); `info` is provenance
    recorded in every store built from it (files read, split seed, ...). `test_split` is the split runs are
    scored on unless told otherwise: the dataset knows it (GLUE's is its labelled `dev`), nothing else guesses
    it from the dataset's name."""

    spec: str
    modality: Modality
    splits: dict[str, Split]
    num_classes: int
    metric: Literal["accuracy", "mcc"] = "accuracy"
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    views: int = 1  # K > 1: the train split carries K − 1 augmented copies per example (data/views.py)
    test_split: str = "test"
    location: str | None = None  # the resolved file, folder or hub name of a dataset given by path; None: by name

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise AftpipeError(
                f"dataset `{self.spec}` has no split `{name}`; its splits are: {', '.join(self.splits)}"
            )
        return self.splits[name]

    def test(self, name: str | None = None) -> Split:
        """The split runs are scored on: `name` when given (--test-split), else the dataset's own."""
        name = name or self.test_split
        if name not in self.splits:
            raise AftpipeError(f"dataset `{self.spec}` has no split `{name}` to test on (it has: "
                               f"{', '.join(self.splits)}); pass {option_hint('test_split', 'NAME')} naming one, or "
                               f"{option_hint('test_fraction', 'F')} to hold out part of `train`")
        return self.splits[name]

    @property
    def resolved_spec(self) -> str:
        """The spec with its path resolved (`tsv:/abs/tickets.tsv`): the same rows however the path was typed."""
        prefix, sep, _ = self.spec.partition(":")
        return f"{prefix}:{self.location}" if sep and self.location is not None else self.spec

    @property
    def name(self) -> str:
        """The folder its stores are cached under (`<cache>/<name>/<source>`): a named dataset's name (`sst2`), and
        for one given by path `<stem>-<format>-<8 hex digits>`, the digits a hash of what decides its rows: the
        format, the resolved path, the columns and the split options (`tsv:tickets.tsv` → `tickets-tsv-3f2a9c01`).
        So `tsv:tickets.tsv`, a folder `tickets/` and `tickets.parquet`, or one file with two test fractions, never
        share a folder, while the same file typed relatively or absolutely does."""
        from pathlib import Path

        prefix, sep, arg = self.spec.partition(":")
        name = Path(arg.rstrip("/")).stem.replace(":", "-") if sep else prefix  # hf:glue:sst2 → glue-sst2
        if sep and self.location is not None:
            rows = {"format": prefix, "location": self.location, "split_map": self.info.get("split_map"),
                    "text_col": self.info.get("text_col"), "label_col": self.info.get("label_col"),
                    "test_split": self.info.get("test_split")}
            name += f"-{prefix}-{hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:8]}"
        return f"{name}-views{self.views}" if self.views > 1 else name  # other rows: their own stores



def hub_allowed() -> bool:
    """Whether a named dataset whose local files are missing may fall back to the Hugging Face hub:
    only when the optional `datasets` package is installed and the user has not asked to stay offline
    (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), so an offline machine fails fast with a local-file message."""
    import importlib.util
    import os

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False
    return importlib.util.find_spec("datasets") is not None


def seeded_split(n: int, n_train: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of a dataset that ships as one block: the first `n_train` of
    `default_rng(seed).permutation(n)` are train, the rest test. Each part is returned in ascending
    original order, so a split's row order is the file's order and obvious to anyone reading it."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
