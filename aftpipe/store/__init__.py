"""Feature stores: the contract between `extract` and `train` (DESIGN.md §3).

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
from aftpipe.store.base import FeatureStore, ShardStatus, SplitInfo, SplitPlan, StoreWriter
from aftpipe.store.hdf5_store import HDF5FeatureStore, HDF5Writer
from aftpipe.store.lock import StoreLock
from aftpipe.store.zarr_store import ZarrFeatureStore, ZarrWriter

FORMATS = {"zarr": ZarrWriter, "hdf5": HDF5Writer}
SUFFIX = {"zarr": "", "hdf5": ".h5"}


def store_path(cache_dir: str | Path, dataset: str, source: str, format: str = "zarr") -> Path:
    """Where the store of `dataset` × `source` lives: `<cache>/<dataset>/<source>[.h5]`."""
    return Path(cache_dir) / dataset / f"{source}{SUFFIX[format]}"


def open_features(path: str | Path) -> FeatureStore:
    """Open a finished (or partly finished) store for reading; `.split(name)` gives mapped rows."""
    p = Path(path)
    if not p.exists() and p.with_name(p.name + ".h5").exists():
        p = p.with_name(p.name + ".h5")
    if not p.exists():
        partial = p.with_name(p.name + ".partial")
        hint = " (an extract into it is unfinished: re-run it to resume)" if partial.exists() else ""
        raise AftpipeError(f"no feature store at {p}{hint}; create it with `aftpipe extract`")
    if p.is_dir():
        if not (p / "zarr.json").exists():
            raise AftpipeError(f"{p} is a directory but not a zarr store (no zarr.json); pass a store made by `aftpipe extract`")
        return ZarrFeatureStore(p)
    return HDF5FeatureStore(p)


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_store` found: bad shards per finished split, and the splits still unfinished."""

    path: Path
    shards_checked: int
    bad: dict[str, list[int]]  # finished split → shard numbers whose bytes differ from their checksums
    unfinished: dict[str, tuple[int, int]]  # split → (shards done, shards planned)

    @property
    def ok(self) -> bool:
        return not any(self.bad.values())


def verify_store(path: str | Path) -> VerifyReport:
    """Re-hash every shard of every finished split against the manifest's checksums."""
    st = open_features(path)
    infos = st.split_infos()
    return VerifyReport(st.path, sum(len(i.shards) for i in infos), st.verify(),
                        {i.name: (i.shards_done, len(i.shards)) for i in infos if not i.complete})


def make_writer(path: Path, format: str, **kwargs: Any) -> StoreWriter:
    """A writer for `format` (`zarr` or `hdf5`; ExtractConfig admits only these)."""
    return FORMATS[format](path, **kwargs)


__all__ = ["FeatureArray", "FeatureStore", "ShardStatus", "SplitInfo", "SplitPlan", "StoreLock", "StoreWriter", "make_writer",
           "open_features", "store_path", "verify_store", "VerifyReport"]
