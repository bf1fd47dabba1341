"""Random-access reads of one split's feature rows, memory-mapped.

Stage 2 asks for a batch of arbitrary row indices every step, so this is the hot path. Uncompressed
zarr shards and HDF5 contiguous datasets are plain row-major bytes at a known offset, so each shard is
exposed as a numpy view over an mmap and a batch is one fancy-index per shard it touches (docs/design.md §3:
zarr's own indexing reads ~4k rows/s; a mapped array reads millions). Compressed stores fall back to
`ChunkedFeatureArray`, which batches one zarr/h5py call per request.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from aftpipe.store.manifest import sha256_bytes


def map_rows(path: str | Path, offset: int, rows: int, d: int, dtype: np.dtype) -> np.ndarray:
    """A read-only (rows, d) ndarray over bytes [offset, offset + rows*d*itemsize) of `path`.

    Plain ndarray over an mmap rather than np.memmap: fancy indexing on the memmap subclass pays for
    __array_finalize__ on every batch."""
    nbytes = rows * d * dtype.itemsize
    if nbytes == 0:
        return np.empty((0, d), dtype)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mm, dtype=dtype, count=rows * d, offset=offset).reshape(rows, d)


def map_stitched(pieces: Sequence[tuple[str | Path, int]], d: int, dtype: np.dtype) -> np.ndarray | None:
    """One read-only (N, d) array over several files' leading bytes, mapped back to back.

    A batch of random rows that spans shards is then a single fancy-index, as fast as one file
    (a per-shard gather costs several numpy calls per batch: 3-4x slower at 128 rows). `pieces` are
    (path, rows); each piece but the last must be a whole number of pages so the next can follow it.
    Linux only (MAP_FIXED over a reserved range); returns None where that does not hold."""
    if sys.platform != "linux" or len(pieces) < 2:
        return None
    page = mmap.PAGESIZE
    sizes = [rows * d * dtype.itemsize for _, rows in pieces]
    if any(sz % page for sz in sizes[:-1]) or not sizes[-1]:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    total = sum(sizes)
    span = -(-total // page) * page
    failed = ctypes.c_void_p(-1).value
    MAP_FIXED, MAP_NORESERVE = 0x10, 0x4000
    base = libc.mmap(None, span, mmap.PROT_NONE if hasattr(mmap, "PROT_NONE") else 0,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    if base in (None, failed):
        return None
    off = 0
    for (path, _), sz in zip(pieces, sizes):
        with open(path, "rb") as f:
            got = libc.mmap(base + off, -(-sz // page) * page, mmap.PROT_READ, mmap.MAP_SHARED | MAP_FIXED,
                            f.fileno(), 0)
        if got != base + off:
            libc.munmap(base, span)
            return None
        off += sz
    buf = (ctypes.c_char * total).from_address(base)
    arr = np.frombuffer(buf, dtype=dtype).reshape(-1, d)
    arr.flags.writeable = False  # PROT_READ: a write would crash the process, so refuse it in numpy
    weakref.finalize(buf, libc.munmap, base, span)  # the mapping lives exactly as long as the buffer
    return arr


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


class FeatureArray:
    """(N, D) features of one split, as equal-height memory-mapped shards.

    `arr[idx]` accepts an int, a slice or an int array and returns rows in the stored dtype
    (float16/float32; bfloat16 is widened to float32). `index[i]` is the dataset example of row i."""

    def __init__(
        self,
        shards: Sequence[np.ndarray],
        shard_rows: int,
        index: np.ndarray,
        logical_dtype: str,
        ranges: Sequence[tuple[int, int]] = (),
        checksums: Sequence[str | None] = (),
        name: str = "",
    ) -> None:
        self._shards = list(shards)
        self._ranges = list(ranges)  # the row ranges the manifest checksummed
        self._shard_rows = shard_rows
        self.index = index
        self.logical_dtype = logical_dtype
        self.name = name
        self._checksums = list(checksums)
        d = self._shards[0].shape[1] if self._shards else 0
        self.shape = (sum(s.shape[0] for s in self._shards), d)
        self._single = self._shards[0] if len(self._shards) == 1 else None
        self._widen = bf16_to_f32 if logical_dtype == "bfloat16" else None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self._widen else self._shards[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def _take(self, idx: np.ndarray) -> np.ndarray:
        if self._single is not None:
            return self._single[idx]
        shard = idx // self._shard_rows
        first = shard[0]
        if (shard == first).all():  # common for small stores and sorted batches
            return self._shards[first][idx - first * self._shard_rows]
        out = np.empty((len(idx), self.shape[1]), self._shards[0].dtype)
        order = np.argsort(shard, kind="stable")
        sorted_shard = shard[order]
        bounds = np.flatnonzero(np.diff(sorted_shard)) + 1
        for part in np.split(order, bounds):
            s = shard[part[0]]
            out[part] = self._shards[s][idx[part] - s * self._shard_rows]
        return out

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)))
        idx = np.asarray(key, dtype=np.int64)
        if idx.ndim != 1:
            raise IndexError("index rows with a 1-D int array")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        if len(idx) == 0:
            return np.empty((0, self.shape[1]), self.dtype)
        out = self._take(idx)
        return self._widen(out) if self._widen else out

    def read(self, idx: Sequence[int] | np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        return self[idx].astype(dtype, copy=False)

    def to_memory(self) -> "FeatureArray":
        """Copy every shard into RAM once (`--in-memory`); reads then never touch the page cache."""
        arrays = [np.array(s) for s in self._shards]
        return FeatureArray(arrays, self._shard_rows, self.index, self.logical_dtype, self._ranges,
                            self._checksums, self.name)

    def _raw_rows(self, a: int, b: int) -> np.ndarray:
        """Rows a..b in the stored dtype (a view where the rows lie in one mapped piece)."""
        s = a // self._shard_rows
        if self._single is not None or (b - 1) // self._shard_rows == s:
            piece = self._single if self._single is not None else self._shards[s]
            off = 0 if self._single is not None else s * self._shard_rows
            return piece[a - off:b - off]
        return self._take(np.arange(a, b))

    def verify(self, shards: Sequence[int] | None = None) -> list[int]:
        """Re-hash `shards` (default: all); the numbers of those whose bytes differ from the manifest."""
        bad = []
        for i in range(len(self._ranges)) if shards is None else shards:
            (a, b), checksum = self._ranges[i], self._checksums[i]
            try:
                ok = sha256_bytes(self._raw_rows(a, b)) == checksum
            except Exception:  # noqa: BLE001 - a chunked read of a damaged shard fails inside zarr/h5py: that is a bad shard
                ok = False
            if not ok:
                bad.append(i)
        return bad


class ChunkedFeatureArray(FeatureArray):
    """Fallback for stores that cannot be mapped (compressed chunks): one library read per batch,
    for the sorted unique rows, then scattered back into request order."""

    def __init__(self, read_rows: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int], dtype: np.dtype,
                 index: np.ndarray, logical_dtype: str, name: str = "",
                 ranges: Sequence[tuple[int, int]] = (), checksums: Sequence[str | None] = ()) -> None:
        self._read_rows = read_rows
        self._single = None
        self._shard_rows = max(shape[0], 1)
        self._ranges = list(ranges)
        self.shape = shape
        self._dtype = dtype
        self.index = index
        self.logical_dtype = logical_dtype
        self.name = name
        self._widen = bf16_to_f32 if logical_dtype == "bfloat16" else None
        self._checksums = list(checksums)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self._widen else self._dtype

    def _take(self, idx: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(idx, return_inverse=True)
        return self._read_rows(uniq)[inverse]

    def to_memory(self) -> FeatureArray:
        rows = self._read_rows(np.arange(self.shape[0]))
        return FeatureArray([rows], max(self.shape[0], 1), self.index, self.logical_dtype, self._ranges,
                            self._checksums, self.name)

    def _raw_rows(self, a: int, b: int) -> np.ndarray:
        return self._read_rows(np.arange(a, b))
