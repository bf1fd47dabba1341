"""Zarr v3 backend: one group per store, `<split>/features` sharded and uncompressed, `<split>/index`.

Chunks (c rows) are the unit zarr reads, shards (S rows, many chunks) the unit we write: one file per
shard keeps a million-example split to a few hundred files. Written whole and uncompressed, a shard file
is its chunks back to back in row order followed by an index of (offset, nbytes) pairs and a crc32c, so
each shard maps straight onto an (S, D) array. We check that layout from the shard index before mapping,
and fall back to zarr's own reads when it does not hold (e.g. a store someone recompressed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from aftpipe.errors import AftpipeError
from aftpipe.store.array import ChunkedFeatureArray, FeatureArray, map_rows, map_stitched
from aftpipe.store.base import FeatureStore, SplitPlan, StoreWriter
from aftpipe.store.manifest import FILL_VALUES, MANIFEST_KEY, STORAGE_DTYPES

_EMPTY = 2**64 - 1  # shard-index marker of a chunk that was never written


def _zarr():
    import zarr  # imported lazily: zarr pulls in asyncio machinery the CLI's --help does not need

    return zarr


class ZarrWriter(StoreWriter):
    format = "zarr"

    def open(self) -> None:
        zarr = _zarr()
        existing = None
        if (self.path / "zarr.json").exists():
            existing = zarr.open_group(str(self.path), mode="r").attrs.get(MANIFEST_KEY)
        elif self.path.exists() and any(self.path.iterdir()):
            raise AftpipeError(f"{self.path} exists and is not an aftpipe zarr store; move it away or pick another --cache-dir")
        self.check_existing(existing)
        # mode="a" never deletes: open_group(mode="w") would wipe a store we are resuming
        self.group = zarr.open_group(str(self.path), mode="a")

    def _create_split(self, name: str, plan: SplitPlan) -> None:
        if name in self.group:
            del self.group[name]
        g = self.group.require_group(name)
        chunk = min(self.chunk_rows, max(plan.n, 1))
        shard = min(self.shard_rows, -(-max(plan.n, 1) // chunk) * chunk)  # a multiple of chunk, as zarr requires
        g.create_array(
            "features", shape=(plan.n, plan.d), dtype=STORAGE_DTYPES[self.dtype],
            chunks=(chunk, plan.d), shards=(shard, plan.d),
            compressors=None, fill_value=FILL_VALUES[self.dtype],
            config={"write_empty_chunks": True},  # keeps every shard's chunks contiguous and mappable
            attributes={"aftpipe_dtype": self.dtype},
        )
        g.create_array("index", data=np.asarray(plan.index, dtype=np.int64), chunks=(max(plan.n, 1),))
        self._save_manifest(final=False)

    def _write_rows(self, name: str, start: int, rows: np.ndarray) -> None:
        arr = self.group[f"{name}/features"]
        arr[start:start + len(rows)] = rows  # a whole shard: zarr rewrites exactly one shard file

    def _save_manifest(self, final: bool) -> None:
        # update_attributes writes zarr.json once (LocalStore writes are atomic in zarr >= 3.1.3)
        self.group.update_attributes({MANIFEST_KEY: self.manifest})


class ZarrFeatureStore(FeatureStore):
    def __init__(self, path: Path) -> None:
        zarr = _zarr()
        self.path = path
        self.group = zarr.open_group(str(path), mode="r")
        manifest = self.group.attrs.get(MANIFEST_KEY)
        if manifest is None:
            raise AftpipeError(f"{path} is a zarr group but not an aftpipe store (no `{MANIFEST_KEY}` attribute)")
        self.manifest = manifest

    def _open_split(self, name: str, entry: dict[str, Any]) -> FeatureArray:
        arr = self.group[f"{name}/features"]
        index = self.group[f"{name}/index"][:]
        logical = self.manifest["key"]["storage"]["dtype"]
        checksums = [s["sha256"] for s in entry["shards"]]
        shards = self._map_shards(arr, entry)
        if shards is not None:
            files = [(self.path / arr.path / "c" / str(i) / "0", len(m)) for i, m in enumerate(shards)]
            stitched = map_stitched(files, arr.shape[1], arr.dtype)
            if stitched is not None:
                shards = [stitched]
            return FeatureArray(shards, arr.shards[0] if len(shards) > 1 else max(arr.shape[0], 1), index, logical, [tuple(s["rows"]) for s in entry["shards"]],
                                checksums, name)
        return _chunked(arr, index, logical, name, entry)

    def _map_shards(self, arr, entry: dict[str, Any]) -> list[np.ndarray] | None:
        """Map each shard file as rows, or None if any shard is not plain contiguous chunks."""
        meta = json.loads((self.path / arr.path / "zarr.json").read_text())
        codec = meta["codecs"][0]
        if codec["name"] != "sharding_indexed":
            return None
        cfg = codec["configuration"]
        if [c["name"] for c in cfg["codecs"]] != ["bytes"] or cfg.get("index_location", "end") != "end":
            return None
        if meta["chunk_key_encoding"] != {"name": "default", "configuration": {"separator": "/"}}:
            return None
        d = arr.shape[1]
        chunk_rows, shard_rows = arr.chunks[0], arr.shards[0]
        per_shard = -(-shard_rows // chunk_rows)
        chunk_bytes = chunk_rows * d * arr.dtype.itemsize
        maps = []
        for i, s in enumerate(entry["shards"]):
            a, b = s["rows"]
            f = self.path / arr.path / "c" / str(i) / "0"
            if not f.exists():
                return None
            with open(f, "rb") as fh:
                fh.seek(-(per_shard * 16 + 4), os.SEEK_END)
                idx = np.frombuffer(fh.read(per_shard * 16), dtype="<u8").reshape(per_shard, 2)
            used = -(-(b - a) // chunk_rows)
            want = np.stack([np.arange(used, dtype=np.uint64) * chunk_bytes,
                             np.full(used, chunk_bytes, dtype=np.uint64)], axis=1)
            if not np.array_equal(idx[:used], want):
                return None
            maps.append(map_rows(f, 0, b - a, d, arr.dtype))
        return maps

    def nbytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def _chunked(arr, index: np.ndarray, logical: str, name: str, entry: dict[str, Any]) -> ChunkedFeatureArray:
    def read_rows(rows: np.ndarray) -> np.ndarray:
        return arr.get_orthogonal_selection((rows, slice(None)))

    return ChunkedFeatureArray(read_rows, arr.shape, arr.dtype, index, logical, name,
                               [tuple(s["rows"]) for s in entry["shards"]], [s["sha256"] for s in entry["shards"]])
