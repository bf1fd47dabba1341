"""Feature stores: the contract between `extract` and `train` (docs/design.md §3).

    store = open_features("cache/sst2/minilm")     # zarr dir, or cache/sst2/minilm.h5
    store.manifest["source"], store.splits
    x = store.split("train")[np.array([5, 17, 3])]  # (3, 384) rows, memory-mapped
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aftpipe.errors import AftpipeError
from aftpipe.store.array import FeatureArray
from aftpipe.store.base import Damage, FeatureStore, SplitPlan, StoreWriter
from aftpipe.store.hdf5_store import HDF5FeatureStore, HDF5Writer, is_hdf5
from aftpipe.store.location import is_remote, location, remote_errors
from aftpipe.store.lock import StoreLock, WriterLock
from aftpipe.store.manifest import ManifestError, ShardStatus, SplitInfo
from aftpipe.store.zarr_store import ZarrFeatureStore, ZarrWriter, looks_like_store

FORMATS = {"zarr": ZarrWriter, "hdf5": HDF5Writer}  # the byte writer of each format
SUFFIX = {"zarr": "", "hdf5": ".h5"}


def store_path(cache_dir: str | Path, dataset: str, source: str, format: str = "zarr") -> Any:
    """Where the store of `dataset` × `source` lives: `<cache>/<dataset>/<source>[.h5]`; a `Path`, or a `UPath`
    when `cache_dir` is an fsspec URL (store/location.py)."""
    return location(cache_dir) / dataset / f"{source}{SUFFIX[format]}"


def open_features(path: str | Path) -> FeatureStore:
    """Open a finished (or partly finished) store for reading; `.split(name)` gives mapped rows. `path` may
    be an fsspec URL (s3://bucket/cache/sst2/minilm) of a zarr store."""
    p = location(path)
    if is_remote(p):
        return _open_remote(p)
    if not p.exists() and p.with_name(p.name + ".h5").exists():
        p = p.with_name(p.name + ".h5")
    if not p.exists():
        partial = p.with_name(p.name + ".partial")
        hint = " (an extract into it is unfinished: re-run it to resume)" if partial.exists() else ""
        raise AftpipeError(f"no feature store at {p}{hint}; create it with `aftpipe extract`")
    if p.is_dir():
        if not looks_like_store(p):
            raise AftpipeError(f"{p} is a directory but not a zarr store (no zarr.json); pass a store made by `aftpipe extract`")
        return ZarrFeatureStore(p)
    if not is_hdf5(p):
        raise AftpipeError(f"{p} is not a feature store (neither a zarr directory nor an HDF5 file); pass a store made "
                           "by `aftpipe extract`")
    return HDF5FeatureStore(p)


def _open_remote(p: Any) -> FeatureStore:
    with remote_errors(p, "read the store"):
        p.fs.invalidate_cache()
        if not p.exists():
            raise AftpipeError(f"no feature store at {p}; create it with `aftpipe extract --cache-dir URL`")
        if not p.is_dir() or not looks_like_store(p):
            raise AftpipeError(f"{p} is not a zarr store (no zarr.json); a store on object storage is a zarr store "
                               "made by `aftpipe extract --cache-dir URL` (HDF5 stores are local files)")
    return ZarrFeatureStore(p)


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_store` found: every damaged or missing shard, unfinished split, index mismatch and
    metadata disagreement, by split."""

    path: Path
    splits: tuple[str, ...]
    shards_checked: int
    damage: tuple[Damage, ...]

    @property
    def ok(self) -> bool:
        return not self.damage


def verify_store(path: str | Path) -> VerifyReport:
    """Check a store in full: manifest entries, each split's array metadata and index, each shard's file and
    bytes against its checksum. An unreadable manifest raises (`ManifestError`, naming the rebuild command)."""
    st = open_features(path)
    infos = st.split_infos()
    return VerifyReport(st.path, tuple(st.manifest["splits"]), sum(len(i.shards) for i in infos), tuple(st.verify()))


def make_writer(path: Path, format: str, **kwargs: Any) -> StoreWriter:
    """A writer for `format` (`zarr` or `hdf5`; ExtractConfig admits only these)."""
    return StoreWriter(path, FORMATS[format], **kwargs)


__all__ = ["Damage", "FeatureArray", "FeatureStore", "ManifestError", "ShardStatus", "SplitInfo", "SplitPlan", "StoreLock",
           "StoreWriter", "VerifyReport", "WriterLock", "make_writer", "open_features", "store_path", "verify_store"]
