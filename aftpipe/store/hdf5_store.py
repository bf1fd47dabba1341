"""HDF5 backend: one `.h5` file per store, `<split>/features` as a *contiguous* dataset, `<split>/index`.

HDF5 can be left unreadable by a crash while its metadata is dirty, so the write path never touches
metadata while rows are being written: the file is built under `<name>.h5.partial` with every dataset
created full size (early allocation) and closed, rows go in through a memory map at each dataset's byte
offset, progress goes to a JSON sidecar, and only when every shard is done is the manifest set as a file
attribute and the file renamed into place. A kill at any point leaves either the old store or a partial
file that the next run resumes; never a half-written `.h5`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from aftpipe.errors import AftpipeError, option_hint
from aftpipe.store.array import FeatureArray, map_rows
from aftpipe.store.base import FeatureStore, SplitPlan, StoreWriter
from aftpipe.fileio import write_json
from aftpipe.store.manifest import FILL_VALUES, MANIFEST_KEY, STORAGE_DTYPES


class HDF5Writer(StoreWriter):
    format = "hdf5"

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    @property
    def progress(self) -> Path:
        return self.path.with_name(self.path.name + ".partial.json")

    def open(self) -> None:
        self._maps: dict[str, np.memmap] = {}
        existing = None
        if self.partial.exists() and self.progress.exists():
            try:
                existing = json.loads(self.progress.read_text())
                _offsets(self.partial)  # a partial file whose metadata a crash broke is restarted
            except (OSError, ValueError):
                existing = None
                self._discard_existing()
        if existing is None and self.path.exists():
            existing = read_h5_manifest(self.path)
            self._copy_on_write = True
        else:
            self._copy_on_write = False
        self.check_existing(existing)

    def _discard_existing(self) -> None:
        # the finished store stays in place until a new one replaces it by rename
        for p in (self.partial, self.progress):
            p.unlink(missing_ok=True)
        self._copy_on_write = False

    def _ensure_partial(self) -> None:
        import h5py

        if self.partial.exists():
            return
        if self._copy_on_write and self.path.exists():
            shutil.copyfile(self.path, self.partial)  # adding a split: never edit the finished file in place
        else:
            with h5py.File(self.partial, "w"):
                pass

    def _create_split(self, name: str, plan: SplitPlan) -> None:
        import h5py

        self._ensure_partial()
        self._maps.pop(name, None)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # so the byte offset exists before any row is written
        with h5py.File(self.partial, "a") as f:
            if name in f:
                del f[name]
            g = f.create_group(name)
            d = g.create_dataset("features", shape=(plan.n, plan.d), dtype=STORAGE_DTYPES[self.dtype],
                                 fillvalue=FILL_VALUES[self.dtype], dcpl=dcpl)
            d.attrs["aftpipe_dtype"] = self.dtype
            g.create_dataset("index", data=np.asarray(plan.index, dtype=np.int64))
        self._save_manifest(final=False)

    def _map(self, name: str) -> np.memmap:
        if name not in self._maps:
            offset = _offsets(self.partial)[name]
            n, d = self.manifest["splits"][name]["n"], self.manifest["splits"][name]["d"]
            self._maps[name] = np.memmap(self.partial, mode="r+", dtype=STORAGE_DTYPES[self.dtype],
                                         offset=offset, shape=(n, d))
        return self._maps[name]

    def _write_rows(self, name: str, start: int, rows: np.ndarray) -> None:
        m = self._map(name)
        m[start:start + len(rows)] = rows
        m.flush()  # the shard is on disk before the progress file says it is done

    def _save_manifest(self, final: bool) -> None:
        import h5py

        if not final:
            write_json(self.progress, self.manifest)
            return
        self.close()
        if not self.partial.exists():  # nothing was written: the finished store is already right
            return
        with h5py.File(self.partial, "a") as f:
            f.attrs[MANIFEST_KEY] = json.dumps(self.manifest, sort_keys=True)
        with open(self.partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.partial, self.path)
        self.progress.unlink(missing_ok=True)

    def close(self) -> None:
        for m in self._maps.values():
            m.flush()
        self._maps.clear()


def _offsets(path: Path) -> dict[str, int]:
    import h5py

    with h5py.File(path, "r") as f:
        return {name: f[name]["features"].id.get_offset() for name in f if "features" in f[name]}


def read_h5_manifest(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(MANIFEST_KEY)
    except OSError as e:
        raise AftpipeError(f"{path} is not a readable HDF5 file ({e}); re-extract it with "
                           f"{option_hint('overwrite')}") from None
    if raw is None:
        raise AftpipeError(f"{path} is an HDF5 file but not an aftpipe store (no `{MANIFEST_KEY}` attribute)")
    return json.loads(raw)


class HDF5FeatureStore(FeatureStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest = read_h5_manifest(path)

    def _open_split(self, name: str, entry: dict[str, Any]) -> FeatureArray:
        import h5py

        with h5py.File(self.path, "r") as f:
            d = f[name]["features"]
            offset, dtype, shape = d.id.get_offset(), d.dtype, d.shape
            index = f[name]["index"][:]
            if offset is None or d.chunks is not None or d.compression is not None:
                raise AftpipeError(f"{self.path} split `{name}` is not a contiguous uncompressed dataset; "
                                   "re-extract it with aftpipe")
        logical = self.manifest["key"]["storage"]["dtype"]
        whole = map_rows(self.path, offset, shape[0], shape[1], dtype)
        return FeatureArray([whole], max(shape[0], 1), index, logical, [tuple(s["rows"]) for s in entry["shards"]],
                            [s["sha256"] for s in entry["shards"]], name)

    def nbytes_on_disk(self) -> int:
        return self.path.stat().st_size
