"""Zarr v3 backend: one group per store, `<split>/features` sharded and uncompressed, `<split>/index`.

Chunks (c rows) are the unit zarr reads, shards (S rows, many chunks) the unit we write: one file per
shard keeps a million-example split to a few hundred files. Written whole and uncompressed, a shard file
is its chunks back to back in row order followed by an index of (offset, nbytes) pairs and a crc32c, so
each shard maps straight onto an (S, D) array. Before mapping, every shard file's size, index and index
checksum are checked against the layout the manifest binds; a store someone recompressed (same chunks and
shards) falls back to zarr's own reads.

A store may live behind an fsspec URL (store/location.py): it is written through zarr's FsspecStore, and read
through a local cache of its shard files, each downloaded once and named by its checksum, then mapped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from aftpipe.errors import AftpipeError, option_hint, option_name
from aftpipe.store.array import ChunkedFeatureArray, FeatureArray, map_rows, map_stitched
from aftpipe.store.base import Damage, Damaged, FeatureStore, SplitPlan, BytesWriter, Unreadable, summary
from aftpipe.store.location import cache_folder, fresh, is_remote, remote_errors, remove, write_bytes, zarr_store
from aftpipe.store.manifest import (FILL_VALUES, INDEX_DTYPE, MANIFEST_KEY, STORAGE_DTYPES, ArrayEntry, SplitInfo,
                                    sha256_bytes, zarr_layout)

_EMPTY = 2**64 - 1  # shard-index marker of a chunk that was never written
_ZARR_TEMP = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr's atomic-write temp files, left by a kill


def _zarr():
    import zarr  # imported lazily: zarr pulls in asyncio machinery the CLI's --help does not need

    return zarr


def looks_like_store(path: Path) -> bool:
    """A directory aftpipe wrote, even with its root zarr.json damaged or gone: one with a zarr.json, or
    whose subfolders hold `features` arrays (so `--overwrite` may remove it, unlike any other folder)."""
    return (path / "zarr.json").exists() or any((p / "features").is_dir() for p in path.iterdir() if p.is_dir())


# What a zarr store holds, as this module writes it: the root group's zarr.json; per split a group folder
# (zarr.json, `features`, `index`), each array a zarr.json and chunk/shard files under `c/<n>[/<n>]`; and
# zarr's `.<hex>.partial` temp files a kill leaves.
_SPLIT_ENTRIES = {"zarr.json", "features", "index"}
_ARRAY_ENTRIES = {"zarr.json", "c"}


def foreign_entries(path: Any) -> list[str]:
    """The names of what inside the store `path` this module did not write (someone's file, a run folder
    trained into the store), so `--overwrite` never deletes them."""
    def split_group(p: Any) -> bool:
        return p.is_dir() and all(_own(c, _SPLIT_ENTRIES) for c in p.iterdir())

    return sorted(p.name for p in path.iterdir()
                  if not (p.name == "zarr.json" and not p.is_dir() or _ZARR_TEMP.search(p.name) or split_group(p)))


def _own(p: Any, allowed: set[str] | None) -> bool:
    """Whether `p` is what a store folder holds where `allowed` names its entries (None: the numbered
    chunk and shard entries under an array's `c`)."""
    if _ZARR_TEMP.search(p.name):
        return True
    if allowed is None:
        return p.name.isdigit() and (not p.is_dir() or all(_own(c, None) for c in p.iterdir()))
    if p.name not in allowed:
        return False
    if p.name == "zarr.json":
        return not p.is_dir()
    return p.is_dir() and all(_own(c, None if p.name == "c" else _ARRAY_ENTRIES) for c in p.iterdir())


def read_manifest(path: Path) -> Any:
    """The manifest from `<path>/zarr.json`; raises Unreadable saying what is wrong with it."""
    f = path / "zarr.json"
    try:
        doc = json.loads(f.read_text())
    except FileNotFoundError:
        raise Unreadable("zarr.json is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Unreadable(f"zarr.json: {summary(e)}") from None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    if not isinstance(attrs, dict) or MANIFEST_KEY not in attrs:
        if not any((p / "features").is_dir() for p in path.iterdir() if p.is_dir()):
            raise AftpipeError(f"{path} is a zarr group but not an aftpipe store (no `{MANIFEST_KEY}` attribute)")
        raise Unreadable(f"zarr.json holds no `{MANIFEST_KEY}` manifest")
    return attrs[MANIFEST_KEY]


def recorded_command(path: Path) -> str | None:
    """The extract command kept in each features array's attributes, for when the manifest is lost."""
    for meta in sorted(path.glob("*/features/zarr.json")):
        try:
            cmd = json.loads(meta.read_text()).get("attributes", {}).get("aftpipe_command")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            continue
        if isinstance(cmd, str):
            return cmd
    return None


class ZarrWriter(BytesWriter):
    format = "zarr"

    def open(self, overwrite: bool) -> ZarrFeatureStore | None:
        with remote_errors(self.path, "write the store"):
            return self._open(overwrite)

    def _open(self, overwrite: bool) -> ZarrFeatureStore | None:
        self._arrays: dict[str, Any] = {}
        if not is_remote(self.path) and self.path.is_dir():
            for tmp in self.path.rglob("*.partial"):  # a killed write's temp file; the file it replaces is intact
                if _ZARR_TEMP.search(tmp.name):
                    tmp.unlink(missing_ok=True)
        if fresh(self.path).is_dir() and any(self.path.iterdir()):
            if not looks_like_store(self.path):
                raise AftpipeError(f"{self.path} exists and is not an aftpipe zarr store; move it away or pick another "
                                   f"{option_name('cache_dir')}")
            if not overwrite:
                existing = ZarrFeatureStore(self.path)
                existing.read_through = False  # what the store holds now decides which shards are done
                return existing
            # refused rather than worked around: what aftpipe did not write is never its to delete, and
            # a rebuilt store around someone's folder would still be one `rm -r` away from losing it
            if foreign := foreign_entries(self.path):
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise AftpipeError(f"{self.path} holds {shown}, which aftpipe did not write, so "
                                   f"{option_hint('overwrite')} will not delete the store; move them out of it "
                                   "and run the same command again")
            self.discard()
        elif self.path.exists() and not self.path.is_dir():
            raise AftpipeError(f"{self.path} exists and is not an aftpipe zarr store; move it away or pick another "
                               f"{option_name('cache_dir')}")
        return None

    def start(self, manifest: dict[str, Any], new: bool) -> None:
        zarr = _zarr()
        with remote_errors(self.path, "write the store"):
            if new:  # the group and its manifest in one write, so the store is never anonymous
                self.group = zarr.create_group(zarr_store(self.path), attributes={MANIFEST_KEY: manifest},
                                               overwrite=True)
            else:  # mode="a" never deletes: open_group(mode="w") would wipe a store we are resuming
                self.group = zarr.open_group(zarr_store(self.path), mode="a")

    def follow(self, state: dict[str, Any]) -> None:
        self._arrays = {}

    def _array_args(self, plan: SplitPlan) -> dict[str, Any]:
        chunks, shards = zarr_layout(plan.n, plan.d, self.chunk_rows, self.shard_rows)
        return dict(shape=(plan.n, plan.d), dtype=STORAGE_DTYPES[self.dtype], chunks=tuple(chunks),
                    shards=tuple(shards), compressors=None, fill_value=FILL_VALUES[self.dtype],
                    config={"write_empty_chunks": True},  # keeps every shard's chunks contiguous and mappable
                    attributes={"aftpipe_dtype": self.dtype, "aftpipe_command": self.command})

    def create_split(self, name: str, plan: SplitPlan, manifest: dict[str, Any]) -> None:
        remove(self.path / name)  # whatever was there, readable or not
        self._arrays.pop(name, None)
        g = self.group.require_group(name)
        g.create_array("features", **self._array_args(plan))
        self._write_index(name, plan)
        self.save_manifest(manifest, final=False)  # the arrays and the entry that describes them, together

    def _write_index(self, name: str, plan: SplitPlan) -> None:
        _zarr().create_array(zarr_store(self.path), name=f"{name}/index", data=np.asarray(plan.index, dtype=INDEX_DTYPE),
                             chunks=(max(plan.n, 1),), overwrite=True)

    def repair_features(self, name: str, plan: SplitPlan) -> None:
        # The metadata is rewritten as zarr itself would write it (built in memory), leaving the shard files
        # alone: a relabelled dtype damages how the bytes are read, not the bytes, and the shards whose bytes
        # still match their checksums are kept.
        zarr = _zarr()
        mem = zarr.storage.MemoryStore()
        zarr.create_array(mem, name="features", **self._array_args(plan))
        doc = mem._store_dict["features/zarr.json"].to_bytes()
        if not is_remote(self.path):
            (self.path / name / "features").mkdir(parents=True, exist_ok=True)
        if not (self.path / name / "zarr.json").exists():
            self.group.require_group(name)
        write_bytes(self.path / name / "features" / "zarr.json", doc)
        self._arrays.pop(name, None)

    def repair_index(self, name: str, plan: SplitPlan) -> None:
        self._write_index(name, plan)

    def drop_shard(self, name: str, shard: int) -> None:
        # zarr reads a shard file it is about to overwrite whole and fails on a damaged one: remove it first
        remove(self.path / name / "features" / "c" / str(shard) / "0")

    def _write_rows(self, name: str, start: int, rows: np.ndarray) -> None:
        if name not in self._arrays:
            self._arrays[name] = _zarr().open_array(zarr_store(self.path), path=f"{name}/features", mode="r+")
        self._arrays[name][start:start + len(rows)] = rows  # a whole shard: zarr rewrites exactly one shard file

    def save_manifest(self, manifest: dict[str, Any], final: bool) -> None:
        # update_attributes writes zarr.json once (LocalStore writes are atomic in zarr >= 3.1.3)
        self.group.update_attributes({MANIFEST_KEY: manifest})

    def discard(self) -> None:
        remove(self.path)


class ZarrFeatureStore(FeatureStore):
    where = "zarr.json"

    def __init__(self, path: Path, manifest: Any = None) -> None:
        with remote_errors(path, "read the store"):
            super().__init__(path, manifest)
        self._zarr_store: Any = None
        self.read_through = True  # remote shards: reuse the local copies (see _shard_file)

    def _read_manifest(self) -> Any:
        return read_manifest(fresh(self.path))

    def verify(self) -> list[Damage]:
        self.read_through = False
        try:
            return super().verify()
        finally:
            self.read_through = True

    def _rebuild_command(self) -> str | None:
        return recorded_command(self.path)

    def _array(self, name: str, part: str) -> Any:
        if self._zarr_store is None:
            self._zarr_store = zarr_store(self.path, read_only=True)
        try:
            return _zarr().open_array(self._zarr_store, path=f"{name}/{part}", mode="r")
        except Exception as e:  # noqa: BLE001 - zarr raises many types for a damaged zarr.json; all mean "unreadable"
            raise Damaged(f"{name}/{part}/zarr.json: {summary(e)}") from None

    def _features_meta(self, name: str) -> dict[str, Any]:
        arr = self._array(name, "features")
        return {"dtype": np.dtype(arr.dtype).str, "shape": list(arr.shape), "chunks": list(arr.chunks),
                "shards": list(arr.shards) if arr.shards else None}

    def _index(self, name: str) -> np.ndarray:
        arr = self._array(name, "index")
        try:
            return np.asarray(arr[:])
        except Exception as e:  # noqa: BLE001 - a damaged chunk fails inside zarr's codecs
            raise Damaged(f"{name}/index: {summary(e)}") from None

    def _open_features(self, info: SplitInfo, index: np.ndarray, want: ArrayEntry,
                       meta_ok: bool) -> tuple[FeatureArray, list[Damage]]:
        name, logical = info.name, self.storage["dtype"]
        ranges = [s.rows for s in info.shards]
        checksums = [s.sha256 for s in info.shards]
        if meta_ok and not self._plain(name):  # someone recompressed it: zarr's own reads
            arr = self._array(name, "features")

            def read_rows(rows: np.ndarray) -> np.ndarray:
                return arr.get_orthogonal_selection((rows, slice(None)))

            return ChunkedFeatureArray(read_rows, arr.shape, arr.dtype, index, logical, name, ranges, checksums), []
        assert want.chunks is not None and want.shards is not None
        dtype, d, chunk_rows, shard_rows = np.dtype(want.dtype), info.d, want.chunks[0], want.shards[0]
        maps, damage, files = [], [], []
        for i, (a, b) in enumerate(ranges):
            f = self._shard_file(name, i, checksums[i], lambda f: _shard_file_problem(
                f, b - a, chunk_rows, shard_rows, d, dtype), b - a, d, dtype)
            files.append(f)
            problem = _shard_file_problem(f, b - a, chunk_rows, shard_rows, d, dtype)
            if problem:
                damage.append(Damage(name, "shard", f"shard {i} {problem}", i))
                maps.append(np.full((b - a, d), np.nan, dtype))  # never served: the split is refused
            else:
                maps.append(map_rows(f, 0, b - a, d, dtype))
        if not damage and len(maps) > 1:
            stitched = map_stitched([(f, len(m)) for f, m in zip(files, maps)], d, dtype)
            if stitched is not None:
                maps = [stitched]
        if len(maps) == 1:
            shard_rows = max(info.n, 1)
        return FeatureArray(maps, shard_rows, index, logical, ranges, checksums, name), damage

    def _shard_file(self, name: str, i: int, sha256: str | None, problem: Any, rows: int, d: int,
                    dtype: np.dtype) -> Path:
        """The local file holding shard i: the store's own, or for a remote store its copy in the read-through
        cache, downloaded once and kept (named by the shard's checksum) only when its layout and checksum
        pass. `verify` and a resuming writer read the remote bytes afresh (`read_through` off): they must
        see what the store holds now, not what it held when the copy was made."""
        f = self.path / name / "features" / "c" / str(i) / "0"
        if not is_remote(self.path):
            return f
        local = cache_folder(self.path) / name / f"{i}-{sha256 or 'unfinished'}"
        if self.read_through and sha256 and local.exists():
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
        with remote_errors(self.path, "read the store"):
            data = f.read_bytes() if f.exists() else None
        if data is None:
            return tmp  # missing: the caller reports it
        tmp.write_bytes(data)
        if sha256 and problem(tmp) is None and sha256_bytes(map_rows(tmp, 0, rows, d, dtype)) == sha256:
            os.replace(tmp, local)
            return local
        return tmp  # unfinished, or damaged remotely: served (or reported) from a file never reused
    def _plain(self, name: str) -> bool:
        """Whether the features are uncompressed, index-at-end shards with `/` keys: the mappable layout."""
        meta = json.loads((self.path / name / "features" / "zarr.json").read_text())
        codec = meta["codecs"][0]
        if codec["name"] != "sharding_indexed":
            return False
        cfg = codec["configuration"]
        return ([c["name"] for c in cfg["codecs"]] == ["bytes"] and cfg.get("index_location", "end") == "end"
                and [c["name"] for c in cfg.get("index_codecs", [])] == ["bytes", "crc32c"]
                and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}})

    def nbytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def _shard_file_problem(f: Path, rows: int, chunk_rows: int, shard_rows: int, d: int, dtype: np.dtype) -> str | None:
    """What is wrong with an uncompressed shard file of `rows` rows, or None: it exists, has exactly the size
    its chunks and index take, its index lists the chunks back to back, and the index checksum holds."""
    import google_crc32c  # zarr's own crc32c implementation

    per_shard = shard_rows // chunk_rows
    used = -(-rows // chunk_rows)
    chunk_bytes = chunk_rows * d * dtype.itemsize
    size = used * chunk_bytes + per_shard * 16 + 4
    if not f.exists():
        return "file is missing"
    if (got := f.stat().st_size) != size:
        return f"file has {got} bytes, expected {size} (truncated or overwritten)"
    with f.open("rb") as fh:
        fh.seek(used * chunk_bytes)
        tail = fh.read(per_shard * 16 + 4)
    idx = np.frombuffer(tail[:-4], dtype="<u8").reshape(per_shard, 2)
    want = np.full((per_shard, 2), _EMPTY, dtype=np.uint64)
    want[:used, 0] = np.arange(used, dtype=np.uint64) * chunk_bytes
    want[:used, 1] = chunk_bytes
    if not np.array_equal(idx, want):
        return "has a damaged shard index"
    if np.uint32(google_crc32c.value(tail[:-4])).tobytes() != tail[-4:]:
        return "has a damaged shard index checksum"
    return None
