"""The manifest: a store's provenance and completion state, as one JSON document.

It lives in the store itself (zarr: root group attribute `aftpipe`; HDF5: root attribute `aftpipe`, as a
JSON string) so that a store copied anywhere carries its own history. Completion is the per-shard `done`
list with checksums, never "the file exists": zarr does not write shards that equal the fill value, and a
killed writer can leave a file behind that holds half a shard.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aftpipe.errors import AftpipeError

FORMAT_VERSION = 1
MANIFEST_KEY = "aftpipe"

# bf16 has no numpy dtype: it is stored as its raw uint16 bit pattern and widened on read.
STORAGE_DTYPES = {"float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"), "float32": np.dtype("<f4")}
# NaN fill: real features are never all-NaN, so unwritten rows are visible and zarr never skips a chunk.
FILL_VALUES = {"float16": np.float16("nan"), "bfloat16": np.uint16(0x7FC0), "float32": np.float32("nan")}
INDEX_DTYPE = np.dtype("<i8")


def sha256_bytes(data: bytes | memoryview | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        data = memoryview(np.ascontiguousarray(data)).cast("B")
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


STORE_PACKAGES = ("aftpipe", "torch", "transformers", "timm", "zarr", "h5py", "numpy", "scikit-learn")


def package_versions(names: tuple[str, ...] = STORE_PACKAGES) -> dict[str, str]:
    """The installed version of each of `names` (those not installed are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def host() -> str:
    return platform.node()


def shard_ranges(n: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)] or [(0, 0)]


def new_split_entry(n: int, d: int, fingerprint: str, shard_rows: int) -> dict[str, Any]:
    return {
        "n": n,
        "d": d,
        "fingerprint": fingerprint,
        "shards": [{"rows": [a, b], "sha256": None, "done": False} for a, b in shard_ranges(n, shard_rows)],
        "complete": False,
        "wall_s": 0.0,
    }


def split_complete(entry: dict[str, Any]) -> bool:
    return all(s["done"] for s in entry["shards"])


# --- what the bytes mean --------------------------------------------------------------------------------
# The checksums bind a shard's bytes; these bind how the bytes are read. Each split records its features
# array's dtype, shape and chunk/shard layout and its index array's dtype, shape and checksum, so that a
# relabelled dtype (float16 read as int16) or a reshaped array is damage, never a silently different array.

def zarr_layout(n: int, d: int, chunk_rows: int, shard_rows: int) -> tuple[list[int], list[int]]:
    """(chunks, shards) of a split's zarr features: a split smaller than one shard gets a single shard of
    whole chunks, as zarr requires shards to be a multiple of the chunk shape."""
    chunk = min(chunk_rows, max(n, 1))
    shard = min(shard_rows, -(-max(n, 1) // chunk) * chunk)
    return [chunk, d], [shard, d]


def whole_chunks(shard_rows: int, chunk_rows: int) -> int:
    """Rows per shard as written: `shard_rows` rounded up to whole chunks."""
    return -(-shard_rows // chunk_rows) * chunk_rows


def features_binding(format: str, dtype: str, n: int, d: int, chunk_rows: int, shard_rows: int) -> dict[str, Any]:
    """What the features array of an (n, d) split must look like in a `format` store of storage `dtype`."""
    out: dict[str, Any] = {"dtype": STORAGE_DTYPES[dtype].str, "shape": [n, d]}
    if format == "zarr":
        out["chunks"], out["shards"] = zarr_layout(n, d, chunk_rows, whole_chunks(shard_rows, chunk_rows))
    else:
        out["layout"] = "contiguous"
    return out


def index_binding(index: np.ndarray) -> dict[str, Any]:
    index = np.ascontiguousarray(index, dtype=INDEX_DTYPE)
    return {"dtype": INDEX_DTYPE.str, "shape": [len(index)], "sha256": sha256_bytes(index)}


def expected_features(entry: dict[str, Any], storage: dict[str, Any]) -> dict[str, Any]:
    """The split's recorded binding; for a manifest written before bindings were recorded, the one the
    writer derives from the storage settings (the same rule that created the array)."""
    if isinstance(entry.get("features"), dict):
        return entry["features"]
    return features_binding(storage["format"], storage["dtype"], entry["n"], entry["d"], storage["chunk_rows"],
                            storage["shard_rows"])


# --- the entries, typed ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArrayEntry:
    """How one array of a split must look (its binding): dtype and shape; for zarr features the chunk and
    shard shapes, for HDF5 features the layout; for the index, the checksum of its bytes."""

    dtype: str
    shape: list[int]
    chunks: list[int] | None = None
    shards: list[int] | None = None
    layout: str | None = None
    sha256: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArrayEntry:
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    def bound(self) -> dict[str, Any]:
        """The properties this entry binds (those it records), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


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
    limit: int | None = None  # the extract's --limit, when one cut the split short
    features: ArrayEntry | None = None  # how the features array must look (with the store's storage settings)
    index: ArrayEntry | None = None  # how the index array must look, with its checksum (None: not recorded)

    @property
    def shards_done(self) -> int:
        return sum(s.done for s in self.shards)

    @property
    def complete(self) -> bool:
        return self.shards_done == len(self.shards)

    @classmethod
    def from_entry(cls, name: str, e: dict[str, Any], storage: dict[str, Any]) -> SplitInfo:
        shards = tuple(ShardStatus(tuple(s["rows"]), s["sha256"], bool(s["done"])) for s in e["shards"])
        index = ArrayEntry.from_dict(e["index"]) if isinstance(e.get("index"), dict) else None
        return cls(name, e["n"], e["d"], e["fingerprint"], shards, float(e.get("wall_s", 0.0)), e.get("examples_per_s"),
                   e.get("limit"), ArrayEntry.from_dict(expected_features(e, storage)), index)



# --- reading a manifest someone may have damaged ------------------------------------------------------------
class ManifestError(AftpipeError):
    """A store whose manifest cannot be read: nothing in it can be checked, so only a rebuild helps."""


def _is_sha(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_manifest(m: Any) -> str | None:
    """Why `m` cannot be used as a manifest at all (None: it can). Per-split damage is `clean_entry`'s."""
    if not isinstance(m, dict):
        return f"expected a JSON object, got {type(m).__name__}"
    key = m.get("key")
    if not isinstance(key, dict) or not isinstance(key.get("storage"), dict):
        return "no `key.storage` section"
    st = key["storage"]
    if st.get("format") not in ("zarr", "hdf5") or st.get("dtype") not in STORAGE_DTYPES:
        return "`key.storage` names no known format/dtype"
    if not (_count(st.get("chunk_rows")) and st["chunk_rows"] > 0 and _count(st.get("shard_rows")) and st["shard_rows"] > 0):
        return "`key.storage` has no valid chunk_rows/shard_rows"
    if not isinstance(m.get("splits"), dict):
        return "no `splits` section"
    return None


def clean_entry(entry: Any, shard_rows: int) -> tuple[dict[str, Any] | None, list[str]]:
    """A split's manifest entry with damaged parts made safe, and what was wrong.

    None when the entry is unusable (no N, D or fingerprint, or shards that do not tile the rows): the whole
    split must be extracted again. A shard entry with a missing or malformed checksum or flag is kept but
    marked not done, so it is recomputed rather than trusted."""
    if not isinstance(entry, dict):
        return None, ["manifest entry is not an object"]
    n, d, fp, shards = entry.get("n"), entry.get("d"), entry.get("fingerprint"), entry.get("shards")
    if not (_count(n) and _count(d) and isinstance(fp, str) and isinstance(shards, list)):
        return None, ["manifest entry lacks a valid n, d, fingerprint or shard list"]
    ranges = [s.get("rows") if isinstance(s, dict) else None for s in shards]
    if ranges != [[a, b] for a, b in shard_ranges(n, shard_rows)]:
        return None, [f"manifest shard ranges do not tile its {n} rows"]
    binding = entry.get("features")
    if isinstance(binding, dict) and binding.get("shape") != [n, d]:
        return None, [f"manifest N, D ({n}, {d}) disagree with its own features binding {binding.get('shape')}"]
    problems = []
    for i, s in enumerate(shards):
        done, sha = s.get("done"), s.get("sha256")
        if not isinstance(done, bool) or (done and not _is_sha(sha)) or not (sha is None or _is_sha(sha)):
            problems.append(f"shard {i}: manifest entry damaged (done={done!r}, sha256={str(sha)[:16]!r})")
            s["done"], s["sha256"] = False, None
    for part, keys in (("features", ("dtype", "shape")), ("index", ("dtype", "shape", "sha256"))):
        if part in entry and not (isinstance(entry[part], dict) and all(k in entry[part] for k in keys)):
            problems.append(f"manifest `{part}` binding damaged")
            entry.pop(part)
    entry["complete"] = split_complete(entry)
    return entry, problems


def describe_key_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """First differing leaf between two store keys, as `path: old → new`, for one-line errors."""
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return describe_key_difference(a, b, f"{prefix}{k}.")
        short = lambda v: (str(v)[:60] + "…") if len(str(v)) > 60 else str(v)  # noqa: E731
        return f"{prefix}{k}: {short(a)} → {short(b)}"
    return "(no difference)"
