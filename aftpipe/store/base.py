"""The store protocol shared by both backends: a reader (`FeatureStore`) and a shard writer.

A store holds one (dataset, source) pair: per split an (N, D) `features` array and an (N,) `index` array,
plus the manifest. Writers are shard-granular and idempotent: a shard is written whole, hashed, then marked
done in the manifest, so a killed extract resumes by skipping done shards and ends bit-identical.
"""

from __future__ import annotations

import copy
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aftpipe.errors import AftpipeError, option_hint, option_name
from aftpipe.store.array import FeatureArray
from aftpipe.store.manifest import (
    FORMAT_VERSION,
    STORAGE_DTYPES,
    describe_key_difference,
    new_split_entry,
    now,
    sha256_bytes,
    split_complete,
)


@dataclass(frozen=True)
class ShardStatus:
    rows: tuple[int, int]  # [start, stop) rows of the split
    sha256: str | None
    done: bool


@dataclass(frozen=True)
class SplitInfo:
    """What the manifest says of one split, typed: readers never walk the manifest dict themselves."""

    name: str
    n: int
    d: int
    fingerprint: str
    shards: tuple[ShardStatus, ...]
    wall_s: float  # extraction time spent on it, over every run that wrote to it
    examples_per_s: float | None  # of the last run that computed rows

    @property
    def shards_done(self) -> int:
        return sum(s.done for s in self.shards)

    @property
    def complete(self) -> bool:
        return self.shards_done == len(self.shards)

    @classmethod
    def from_entry(cls, name: str, e: dict[str, Any]) -> SplitInfo:
        shards = tuple(ShardStatus(tuple(s["rows"]), s["sha256"], bool(s["done"])) for s in e["shards"])
        return cls(name, e["n"], e["d"], e["fingerprint"], shards, float(e.get("wall_s", 0.0)), e.get("examples_per_s"))


@dataclass(frozen=True)
class SplitPlan:
    """What a writer needs to lay out one split before any compute."""

    n: int
    d: int
    index: np.ndarray  # (n,) dataset example index of each row
    fingerprint: str


class FeatureStore(ABC):
    """A store opened for reading. `split(name)` is a memory-mapped `FeatureArray`."""

    path: Path
    manifest: dict[str, Any]  # the JSON document; use the accessors below rather than its keys

    @property
    def splits(self) -> list[str]:
        """The finished splits."""
        return [s for s, e in self.manifest["splits"].items() if split_complete(e)]

    def split_infos(self) -> list[SplitInfo]:
        """Every split the manifest plans, finished or not."""
        return [SplitInfo.from_entry(n, e) for n, e in self.manifest["splits"].items()]

    def split_info(self, name: str) -> SplitInfo:
        entry = self.manifest["splits"].get(name)
        if entry is None:
            raise AftpipeError(
                f"store {self.path} has no split `{name}` (it has: {', '.join(self.manifest['splits']) or 'none'}); "
                f"extract it with `aftpipe extract ... --splits {name}`"
            )
        return SplitInfo.from_entry(name, entry)

    @property
    def source(self) -> dict[str, Any]:
        """The source's provenance (library, model id, weights sha256, pooling, ...): keys vary by library."""
        return self.manifest.get("source", {})

    @property
    def foundation_params(self) -> int:
        return int(self.source.get("params") or 0)

    @property
    def dataset(self) -> dict[str, Any]:
        """name, modality, num_classes, metric, class_names, info."""
        return self.manifest.get("dataset", {})

    @property
    def views(self) -> int:
        return int((self.dataset.get("info") or {}).get("views", 1))

    @property
    def storage(self) -> dict[str, Any]:
        """format, dtype, chunk_rows, shard_rows, compressor."""
        return self.manifest["key"]["storage"]

    @property
    def state(self) -> str:
        return self.manifest.get("state", "in_progress")

    @property
    def built(self) -> dict[str, Any]:
        """When, on what, with which packages: created, updated, device, packages."""
        return {k: self.manifest.get(k) for k in ("created", "updated", "device", "packages")}

    def split(self, name: str, verify: bool = False) -> FeatureArray:
        info = self.split_info(name)
        entry = self.manifest["splits"][name]
        if not info.complete:
            raise AftpipeError(
                f"split `{name}` of store {self.path} is unfinished; re-run the extract command to resume it"
            )
        arr = self._open_split(name, entry)
        if verify and (bad := arr.verify()):
            raise AftpipeError(f"store {self.path} split `{name}`: shards {bad} fail their checksums; "
                               f"re-extract with {option_hint('overwrite')}")
        return arr

    @abstractmethod
    def _open_split(self, name: str, entry: dict[str, Any]) -> FeatureArray: ...

    def verify(self) -> dict[str, list[int]]:
        """Re-hash every finished shard of every split; {split: [bad shard numbers]} (empty lists = good)."""
        return {name: self._open_split(name, e).verify() for name, e in self.manifest["splits"].items()
                if split_complete(e)}

    @abstractmethod
    def nbytes_on_disk(self) -> int: ...


class StoreWriter(ABC):
    """Creates or resumes a store. Subclasses own the bytes; this class owns the manifest's rules."""

    format: str

    def __init__(self, path: Path, key: dict[str, Any], provenance: dict[str, Any], dtype: str,
                 chunk_rows: int, shard_rows: int, overwrite: bool) -> None:
        self.path = path
        self.dtype = dtype
        self.np_dtype = STORAGE_DTYPES[dtype]
        self.chunk_rows = chunk_rows
        self.shard_rows = -(-shard_rows // chunk_rows) * chunk_rows  # whole chunks per shard
        self.overwrite = overwrite
        storage = {"format": self.format, "dtype": dtype, "chunk_rows": chunk_rows, "shard_rows": shard_rows,
                   "compressor": None}
        self.key = {"format_version": FORMAT_VERSION, **key, "storage": storage}
        self.manifest: dict[str, Any] = {**copy.deepcopy(provenance), "key": self.key, "splits": {},
                                         "state": "in_progress", "created": now()}
        self.resumed_from: dict[str, Any] | None = None

    # -- the rules --------------------------------------------------------------------------------
    def check_existing(self, existing: dict[str, Any] | None) -> None:
        """Adopt an existing store's manifest if it was built with the same arguments; refuse otherwise."""
        if existing is None:
            return
        if self.overwrite:
            return self._discard_existing()
        if existing.get("key") != self.key:
            diff = describe_key_difference(existing.get("key", {}), self.key)
            raise AftpipeError(
                f"store {self.path} was built with different arguments ({diff}); "
                f"pass {option_hint('overwrite')} to rebuild it, or choose another {option_name('cache_dir')}"
            )
        self.manifest["splits"] = copy.deepcopy(existing["splits"])
        self.manifest["created"] = existing.get("created", self.manifest["created"])
        self.resumed_from = existing

    def plan_split(self, name: str, plan: SplitPlan) -> None:
        entry = self.manifest["splits"].get(name)
        if entry is not None and (entry["n"], entry["d"], entry["fingerprint"]) != (plan.n, plan.d, plan.fingerprint):
            if not self.overwrite:
                what = "rows" if entry["n"] != plan.n else ("dim" if entry["d"] != plan.d else "dataset fingerprint")
                raise AftpipeError(
                    f"store {self.path} split `{name}` was extracted from other data ({what}: "
                    f"{entry['n']}×{entry['d']} {entry['fingerprint'][:12]} vs now {plan.n}×{plan.d} "
                    f"{plan.fingerprint[:12]}); pass {option_hint('overwrite')} to re-extract it"
                )
            entry = None
        if entry is None:
            entry = new_split_entry(plan.n, plan.d, plan.fingerprint, self.shard_rows)
            self.manifest["splits"][name] = entry
            self._create_split(name, plan)

    def split_info(self, name: str) -> SplitInfo:
        return SplitInfo.from_entry(name, self.manifest["splits"][name])

    def record_timing(self, name: str, wall_s: float, rows_computed: int) -> None:
        """Add a run's extraction time to the split (saved with the next manifest write)."""
        entry = self.manifest["splits"][name]
        entry["wall_s"] = entry.get("wall_s", 0.0) + wall_s
        if rows_computed:
            entry["examples_per_s"] = round(rows_computed / max(wall_s, 1e-9), 1)

    def write_shard(self, name: str, shard: int, rows: np.ndarray) -> None:
        entry = self.manifest["splits"][name]
        a, b = entry["shards"][shard]["rows"]
        rows = np.ascontiguousarray(rows, dtype=self.np_dtype)
        if rows.shape != (b - a, entry["d"]):
            raise ValueError(f"shard {shard} of {name}: expected {(b - a, entry['d'])} rows, got {rows.shape}")
        self._write_rows(name, a, rows)
        entry["shards"][shard].update(sha256=sha256_bytes(rows), done=True)
        entry["complete"] = split_complete(entry)
        self._save_manifest(final=False)

    def finish(self, extra: dict[str, Any]) -> None:
        self.manifest.update(extra)
        if all(split_complete(e) for e in self.manifest["splits"].values()):
            self.manifest["state"] = "complete"
        self.manifest["updated"] = now()
        self._save_manifest(final=True)

    def _discard_existing(self) -> None:
        if self.path.is_dir():
            shutil.rmtree(self.path)
        elif self.path.exists():
            self.path.unlink()

    # -- the bytes ----------------------------------------------------------------------------------
    @abstractmethod
    def open(self) -> None:
        """Create or reopen the store on disk (calls check_existing with what is there)."""

    @abstractmethod
    def _create_split(self, name: str, plan: SplitPlan) -> None: ...

    @abstractmethod
    def _write_rows(self, name: str, start: int, rows: np.ndarray) -> None: ...

    @abstractmethod
    def _save_manifest(self, final: bool) -> None: ...

    def close(self) -> None:
        """Release resources; called on success and on error."""
