"""What a feature source is: a frozen model that turns a batch of raw inputs into (B, D) float rows.

The extract engine drives every source the same way:
    source.fit(train_split)          # only sources that learn from data (tfidf); a no-op otherwise
    lengths = source.lengths(rows)   # sort key: a shard's rows are batched longest first
    batch = source.collate(inputs)   # in DataLoader workers: tokenise / decode / transform
    rows = source.forward(batch)     # on the device, under inference mode → (B, D) float32 tensor
`spec()` is the provenance recorded in the store and part of its key: two sources with the same spec
must produce the same rows.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from aftpipe.config import Config, NoOptions
from aftpipe.store.manifest import sha256_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")



class FeatureSource(ABC):
    """A registry entry is the class: `create(arg, options)` loads it, `store_name(arg, options)` names its
    store without loading anything (so a pipeline can look for a store before any model is read); `options`
    is an instance of the class's own `Options`."""

    modality: Literal["text", "image"]
    name: str  # the store's file name: `minilm`, `tfidf`, `hf-bert-base-uncased`, ...
    dim: int
    # the options it reads (config.py): it is handed its own part of the flat SourceOptions, and the others are
    # refused by name (sources.check_options)
    Options: ClassVar[type[Config]] = NoOptions
    params: int = 0  # parameter count of the model behind the features (reported next to the probe)

    @classmethod
    def create(cls, arg: str | None, options: Any) -> FeatureSource:
        """Load the source; `arg` is what followed the colon in `prefix:arg` names."""
        return cls(arg or "", options)  # type: ignore[call-arg]

    @classmethod
    @abstractmethod
    def store_name(cls, arg: str | None, options: Any) -> str: ...

    @classmethod
    def check(cls, arg: str | None, options: Any) -> None:
        """Refuse, cheaply and without loading anything, a source that cannot load here (a model path that
        does not exist): what `aftpipe validate` checks for every store a pipeline would extract."""

    def fit(self, train_inputs: Sequence[Any]) -> None:
        """Learn from the train split's inputs; only data-fitted sources (tfidf) need it."""

    def length(self, x: Any) -> int:
        """Sort key for length-bucketed batches; constant for fixed-size inputs."""
        return 0

    def lengths(self, inputs: Sequence[Any]) -> np.ndarray:
        """`length` of every input, as an int64 array; sources that can measure a whole batch at once (a
        tokenizer's batch call) override this."""
        return np.fromiter((self.length(x) for x in inputs), dtype=np.int64, count=len(inputs))

    @abstractmethod
    def collate(self, inputs: list[Any]) -> Any: ...

    @abstractmethod
    def forward(self, batch: Any) -> torch.Tensor: ...

    @abstractmethod
    def spec(self) -> dict[str, Any]: ...

    def to(self, device: torch.device) -> "FeatureSource":
        return self


def weights_sha256(directory: Path) -> dict[str, str]:
    """sha256 of every weights file in a model directory: the provenance that a path alone is not."""
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir())
            if p.is_file() and p.suffix in WEIGHT_SUFFIXES}


# A `model:` source's store (sources/run_source.py) is checked against its teacher's weights wherever it is read.
@functools.lru_cache(maxsize=16)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    """A teacher's weights hashed once per version of the file (train opens each split of a store)."""
    return sha256_file(path)


def teacher_change(store: Any) -> str | None:
    """When `store` holds the features of a `model:` teacher whose weights changed after the extraction (it
    was retrained over the same folder), what changed and how to re-extract; None for any other store, and
    when the teacher's folder is gone (nothing to compare: the stored features are all there is)."""
    src = store.source
    if src.get("library") != "aftpipe" or not src.get("path"):
        return None
    folder = Path(src["path"])
    for name, sha in (src.get("weights_sha256") or {}).items():
        path = folder / name
        if not path.is_file():
            return None
        stat = path.stat()
        if _sha256(path, stat.st_mtime_ns, stat.st_size) != sha:
            dataset = (store.manifest.get("extract") or {}).get("dataset") or "DATASET"
            return (f"store {store.path} holds the features of teacher {folder} as it was when extracted, but the "
                    f"teacher's {name} has changed since (it was retrained); re-extract them with `aftpipe extract "
                    f"--dataset {dataset} --source model:{folder} --overwrite`")
    return None
