"""Helpers of the fault-injection suite: a tiny labelled text dataset, its extract settings, and a snapshot
of everything that must be bit-identical between two builds of a store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from aftpipe.config import ExtractConfig

SHARD_ROWS, CHUNK_ROWS = 32, 16  # train: 120 rows → shards of 32, 32, 32, 24; test: 40 rows → 32, 8


def extract_config(data: Path, cache: Path, model: Path, fmt: str, **kw) -> ExtractConfig:
    return ExtractConfig(**{**dict(dataset=f"tsv:{data}", sources=(f"hf:{model}",), cache_dir=str(cache), name="data", format=fmt,
                                   shard_rows=SHARD_ROWS, chunk_rows=CHUNK_ROWS, batch_size=16, workers=0), **kw})


def store_of(cache: Path, model: Path, fmt: str) -> Path:
    return cache / "data" / (f"hf-{model.name}" + (".h5" if fmt == "hdf5" else ""))


def copy_cache(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def snapshot(store: Path) -> dict:
    """Everything that must be bit-identical between two builds of a store: each split's feature bytes,
    index and shard checksums, and for zarr every array file (shards, array metadata)."""
    from aftpipe.store import open_features

    st = open_features(store)
    out = {}
    for name in sorted(st.splits):  # the finished ones
        arr = st.split(name, verify=True)
        raw = arr._raw_rows(0, len(arr)) if len(arr) else np.empty((0, arr.shape[1]))
        out[name] = (raw.tobytes(), arr.index.tobytes(), [s["sha256"] for s in st.manifest["splits"][name]["shards"]])
    if store.is_dir():
        out["files"] = {str(p.relative_to(store)): _file(p) for p in sorted(store.rglob("*"))
                        if p.is_file() and (p.name != "zarr.json" or p.parent.name in ("features", "index"))}
    return out


def _file(p: Path) -> bytes:
    """A store file's bytes; an array's metadata without the rebuild command it records (which names the
    splits of the run that created the array: provenance, not data)."""
    if p.name != "zarr.json":
        return p.read_bytes()
    doc = json.loads(p.read_text())
    doc.get("attributes", {}).pop("aftpipe_command", None)
    return json.dumps(doc, sort_keys=True).encode()


def differences(a: dict, b: dict) -> list[str]:
    """What differs between two snapshots, by name (empty: bit-identical)."""
    out = [f"split {k}" for k in sorted(set(a) | set(b)) if k != "files" and a.get(k) != b.get(k)]
    fa, fb = a.get("files", {}), b.get("files", {})
    return out + [f"file {f}" for f in sorted(set(fa) | set(fb)) if fa.get(f) != fb.get(f)]
