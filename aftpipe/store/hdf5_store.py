"""HDF5 backend: one `.h5` file per store, `<split>/features` as a *contiguous* dataset, `<split>/index`.

HDF5 can be left unreadable by a crash while its metadata is dirty, so the write path never touches
metadata while rows are being written, and never touches a finished file at all:

1. the work file `<name>.h5.partial` is built whole under `<name>.h5.partial.new`: every split's datasets
   created full size (early allocation, so the blocks are on disk before any row is), the finished store's
   shards copied in after their checksums pass, then renamed into place; the free space is checked first;
2. rows go in with plain positioned writes (pwrite) at each dataset's byte offset, and progress (the manifest)
   goes to the JSON sidecar `<name>.h5.partial.json` after each shard: the sidecar makes a partial file valid;
3. when every shard is done the manifest is set as a file attribute and the file renamed over `<name>.h5`.

Several processes write one store the same way (a multi-process extract): the HDF5 library is used by rank 0
alone, which creates the work file with every dataset at full size and later publishes it; every rank writes
its own shards' bytes straight into the data region at their offsets, and records them in the journal. This
is neither of the usual answers to "HDF5 has one writer per file". One file per rank joined by a Virtual
Dataset is not contiguous, so it could not be memory-mapped as one array (training would fall back to h5py's
reads, ~100x slower at random batches) and the store would become several files that must move together.
Gathering every row to one writer sends all the features through rank 0's network link and disk: the bottleneck
with many GPUs. Disjoint positioned writes into preallocated space need no HDF5 call at all, and pwrite (not a
shared mmap, which writes back whole pages) is safe from several nodes on a shared POSIX filesystem.

A kill at any point leaves the finished store untouched and either nothing or a partial file that the next
run checks (every dataset against its binding, the file long enough) before resuming from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from aftpipe.errors import AftpipeError, option_name
from aftpipe.fileio import fsync_path, write_json
from aftpipe.store.array import FeatureArray, map_rows
from aftpipe.progress import human_bytes
from aftpipe.store.base import (Carried, Damage, Damaged, FeatureStore, SplitPlan, BytesWriter, Unreadable,
                                free_bytes, summary)
from aftpipe.store.location import is_remote
from aftpipe.store.manifest import FILL_VALUES, INDEX_DTYPE, MANIFEST_KEY, ArrayEntry, SplitInfo, sha256_bytes


class HDF5Writer(BytesWriter):
    format = "hdf5"

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    @property
    def progress(self) -> Path:
        return self.path.with_name(self.path.name + ".partial.json")

    @property
    def building(self) -> Path:
        return self.path.with_name(self.path.name + ".partial.new")

    def open(self, overwrite: bool) -> HDF5FeatureStore | None:
        if is_remote(self.path):
            raise AftpipeError(f"an HDF5 store cannot live at {self.path}: it is written in place at fixed offsets and "
                               "memory-mapped, which object storage cannot do; use the zarr format there")
        self._offset_of: dict[str, int] = {}
        self._fresh: set[str] = set()  # splits whose old bytes are not to be copied (new, or unreadable)
        self._rebuild = False  # the work file must be (re)built before anything is written
        self.building.unlink(missing_ok=True)  # a build a kill interrupted
        existing = None
        if overwrite:
            self._drop_partial()
        else:
            existing = self._valid_partial()
            if existing is None and self.path.exists():
                existing = HDF5FeatureStore(self.path)
        self._existing = existing  # whose done shards' bytes a (re)built work file copies
        self._source = existing.path if existing is not None else None  # the file the done shards are in
        return existing

    def _drop_partial(self, why: str = "") -> None:
        if why and self.partial.exists():
            self.log(f"discarding {self.partial}: {why}")
        for p in (self.partial, self.progress, self.building):
            p.unlink(missing_ok=True)

    def _valid_partial(self) -> HDF5FeatureStore | None:
        """The work file left by an interrupted run, opened for reading, if it can be trusted: it has its
        progress record, and every dataset matches what that record binds. Otherwise it is discarded."""
        if not self.partial.exists():
            self.progress.unlink(missing_ok=True)
            return None
        if not self.progress.exists():
            self._drop_partial("it has no progress record (a run stopped before its first shard)")
            return None
        try:
            reader = HDF5FeatureStore(self.partial, json.loads(self.progress.read_text()))
            for name in reader.manifest["splits"]:
                if bad := [d for d in reader.check_split(name).damage if d.kind != "shard"]:
                    raise Damaged(str(bad[0]))
        except (AftpipeError, Damaged, OSError, ValueError) as e:
            self._drop_partial(f"it does not match its progress record ({e})")
            return None
        return reader

    @property
    def _writing_partial(self) -> bool:
        """Whether the rows go into the work file as it is (one an earlier run or `prepare` built)."""
        return self._source == self.partial and not self._rebuild

    def create_split(self, name: str, plan: SplitPlan, manifest: dict[str, Any]) -> None:
        self._fresh.add(name)
        self._rebuild = True

    def repair_features(self, name: str, plan: SplitPlan) -> None:
        self._fresh.add(name)  # a dataset of another dtype, shape or layout: its bytes are not the features
        self._rebuild = True

    def repair_index(self, name: str, plan: SplitPlan) -> None:
        self._rebuild = True  # the index is written from the plan when the work file is built

    def space_needed(self, splits: dict[str, Any]) -> int:
        if not self._rebuild and all(s["done"] for e in splits.values() for s in e["shards"]):
            return 0
        if self._writing_partial:
            return 1 << 20  # rows go into blocks the work file already holds
        return _file_bytes(splits, self.np_dtype)

    def prepare(self, splits: dict[str, Any], plans: dict[str, SplitPlan]) -> Carried | None:
        """Build the work file when anything is to be written (a shard to compute, or a repair to the layout)
        and the rows cannot go into the one there is."""
        if self._writing_partial or not (self._rebuild or any(not s["done"] for e in splits.values()
                                                               for s in e["shards"])):
            return None
        return self._build(splits, plans)

    def _build(self, splits: dict[str, Any], plans: dict[str, SplitPlan]) -> Carried:
        """Build the work file whole under a temporary name: every split's datasets at full size, the done
        shards of the existing file copied once their checksums pass, then rename it into place."""
        need, free = _file_bytes(splits, self.np_dtype), free_bytes(self.path)
        if need > free:
            raise AftpipeError(f"not enough space for the store {self.path}: it needs {human_bytes(need)}, the device has "
                               f"{human_bytes(free)} free; free some space or pass another {option_name('cache_dir')}")
        try:
            carried = self._build_into(self.building, splits, plans)
            os.replace(self.building, self.partial)
        except BaseException:
            self.building.unlink(missing_ok=True)  # never leave a half-built file taking the space
            raise
        self._source, self._rebuild, self._offset_of = self.partial, False, {}
        return carried

    def _build_into(self, target: Path, splits: dict[str, Any], plans: dict[str, SplitPlan]) -> Carried:
        import h5py

        source = self._existing if self._source is not None else None
        old: dict[str, FeatureArray] = {}
        dropped = []
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # the blocks exist (filled) before any row is mapped
        with h5py.File(target, "w", userblock_size=USERBLOCK) as f:
            for name, entry in splits.items():
                index = plans[name].index if name in plans else None
                if source is not None and name not in self._fresh and name in source.manifest["splits"]:
                    check = source.check_split(name)
                    index_ok = not any(d.kind == "index" for d in check.damage)
                    if check.array is not None and (index is not None or index_ok):  # a planned index is the plan's
                        old[name] = check.array
                        index = check.array.index if index is None else index
                if index is None:  # a split this run does not plan, whose old index is unreadable
                    dropped.append(name)
                    continue
                g = f.create_group(name)
                d = g.create_dataset("features", shape=(entry["n"], entry["d"]), dtype=self.np_dtype,
                                     fillvalue=FILL_VALUES[self.dtype], dcpl=dcpl)
                d.attrs["aftpipe_dtype"] = self.dtype
                g.create_dataset("index", data=np.asarray(index, dtype=INDEX_DTYPE))
        with open(target, "r+b") as fh:  # the rebuild command, where it survives damage to the HDF5 structure
            fh.write(_userblock(self.command))
        offsets = _offsets(target)
        kept: dict[str, set[int]] = {}
        for name, array in old.items():
            entry = splits[name]
            dst = np.memmap(target, mode="r+", dtype=self.np_dtype, offset=offsets[name],
                            shape=(entry["n"], entry["d"])) if entry["n"] else None
            kept[name] = set()
            for i, s in enumerate(entry["shards"]):
                a, b = s["rows"]
                if not s["done"]:
                    continue
                rows = array._raw_rows(a, b)
                if sha256_bytes(rows) == s["sha256"]:
                    dst[a:b] = rows
                    kept[name].add(i)
            if dst is not None:
                dst.flush()
                del dst
        old.clear()
        fsync_path(target)
        return Carried(kept, tuple(dropped))

    def shared_state(self) -> dict[str, Any]:
        return {"offsets": _offsets(self.partial) if self.partial.exists() else {}}

    def follow(self, state: dict[str, Any]) -> None:
        self._existing, self._source, self._rebuild, self._fresh = None, self.partial, False, set()
        self._offset_of = dict(state["offsets"])

    def _write_rows(self, name: str, start: int, rows: np.ndarray) -> None:
        if name not in self._offset_of:
            self._offset_of = _offsets(self.partial)
        offset = self._offset_of[name] + start * rows.shape[1] * self.np_dtype.itemsize
        data = memoryview(np.ascontiguousarray(rows, dtype=self.np_dtype)).cast("B")
        fd = os.open(self.partial, os.O_WRONLY)
        try:
            while data:
                n = os.pwrite(fd, data, offset)
                data, offset = data[n:], offset + n
            os.fsync(fd)  # the shard is on disk before the progress file says it is done
        finally:
            os.close(fd)

    def save_manifest(self, manifest: dict[str, Any], final: bool) -> None:
        import h5py

        written = self._source == self.partial and self.partial.exists()
        if not final:
            if written:
                write_json(self.progress, manifest)
            return
        self.close()
        if not written:
            return  # nothing was written: the finished store is already right
        with h5py.File(self.partial, "a") as f:
            f.attrs[MANIFEST_KEY] = json.dumps(manifest, sort_keys=True)
        fsync_path(self.partial)
        os.replace(self.partial, self.path)
        fsync_path(self.path.parent)  # the rename itself survives a power cut
        self.progress.unlink(missing_ok=True)

    def discard(self) -> None:
        # the finished store stays in place until a new one replaces it by rename
        self._drop_partial()

    def close(self) -> None:
        self._offset_of = {}


def _file_bytes(splits: dict[str, Any], dtype: np.dtype) -> int:
    """The size of a work file holding `splits`."""
    return sum(e["n"] * (e["d"] * dtype.itemsize + INDEX_DTYPE.itemsize) for e in splits.values()) \
        + (1 << 20)  # + HDF5 metadata


def _offsets(path: Path) -> dict[str, int]:
    import h5py

    with h5py.File(path, "r") as f:
        return {name: f[name]["features"].id.get_offset() for name in f if "features" in f[name]}


# The rebuild command lives in the file's user block: bytes HDF5 reserves at the start of the file and never
# interprets, so it is still readable when the file is truncated or its metadata is damaged.
USERBLOCK = 4096
_MAGIC = b"aftpipe store; rebuild with:\n"


def _userblock(command: str | None) -> bytes:
    body = _MAGIC + (command or "").encode() + b"\n"
    return body if len(body) <= USERBLOCK else _MAGIC + b"\n"  # too long to keep: the message says so generically


def _recorded_command(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(USERBLOCK)
    except OSError:
        return None
    if not head.startswith(_MAGIC):
        return None
    command = head[len(_MAGIC):].split(b"\n", 1)[0].decode(errors="replace").strip()
    return command or None


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: Path) -> bool:
    """Whether `path` starts like an HDF5 file: aftpipe's user block, or the HDF5 signature at offset 0 or after
    a user block (512, 1024, 2048, ... bytes), as the HDF5 spec places it. A truncated store passes; a text
    file does not."""
    try:
        with open(path, "rb") as f:
            if f.read(len(_MAGIC)) == _MAGIC:  # our user block: an aftpipe store, even cut short before the HDF5 part
                return True
            for offset in (0, 512, 1024, 2048, 4096, 8192):
                f.seek(offset)
                if f.read(8) == _SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def read_h5_manifest(path: Path) -> Any:
    """The manifest from the file's `aftpipe` attribute; raises Unreadable saying what is wrong with it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(MANIFEST_KEY)
            ours = any(isinstance(f[n], h5py.Group) and "features" in f[n] for n in f)
    except OSError as e:
        raise Unreadable(f"not a readable HDF5 file: {summary(e)}") from None
    if raw is None:
        if not ours:
            raise AftpipeError(f"{path} is an HDF5 file but not an aftpipe store (no `{MANIFEST_KEY}` attribute)")
        raise Unreadable(f"no `{MANIFEST_KEY}` attribute")
    try:
        return json.loads(raw)
    except (ValueError, TypeError) as e:
        raise Unreadable(f"`{MANIFEST_KEY}` attribute: {summary(e)}") from None


class HDF5FeatureStore(FeatureStore):
    @property
    def where(self) -> str:
        return f"{self.path.name} attribute"

    def _read_manifest(self) -> Any:
        return read_h5_manifest(self.path)

    def _rebuild_command(self) -> str | None:
        return _recorded_command(self.path)

    def _dataset_info(self, name: str, part: str) -> tuple[Any, ...]:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                d = f[name][part]
                if part == "index":
                    return (np.asarray(d[:]),)
                return d.dtype, d.shape, d.id.get_offset(), d.chunks, d.compression
        except Exception as e:  # noqa: BLE001 - h5py raises KeyError/OSError/RuntimeError for damaged files
            raise Damaged(f"{name}/{part}: {summary(e)}") from None

    def _features_meta(self, name: str) -> dict[str, Any]:
        dtype, shape, offset, chunks, compression = self._dataset_info(name, "features")
        contiguous = offset is not None and chunks is None and compression is None
        if contiguous and offset + int(np.prod(shape)) * dtype.itemsize > self.path.stat().st_size:
            raise Damaged(f"{name}/features: the file ends before the dataset does (truncated)")
        return {"dtype": dtype.str, "shape": list(shape), "layout": "contiguous" if contiguous else "chunked"}

    def _index(self, name: str) -> np.ndarray:
        return self._dataset_info(name, "index")[0]

    def _open_features(self, info: SplitInfo, index: np.ndarray, want: ArrayEntry,
                       meta_ok: bool) -> tuple[FeatureArray, list[Damage]]:
        if not meta_ok:
            raise Damaged("the features dataset is not the one the manifest describes")
        dtype, shape, offset, _, _ = self._dataset_info(info.name, "features")
        whole = map_rows(self.path, offset, shape[0], shape[1], dtype)
        return FeatureArray([whole], max(shape[0], 1), index, self.storage["dtype"], [s.rows for s in info.shards],
                            [s.sha256 for s in info.shards], info.name), []

    def nbytes_on_disk(self) -> int:
        return self.path.stat().st_size
