"""Every kind of damage a store can suffer, injected into a copy of a clean store: each is named by `verify`,
refused by `train` (one line, nothing trained, no run folder left), and repaired in place by `verify --repair`
(exactly the damaged shards recomputed, the store bit-identical to the clean one). A store whose manifest
itself is unreadable is named as such with the command that rebuilds it, and that command works."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from aftpipe.config import TrainConfig
from aftpipe.errors import AftpipeError
from aftpipe.extraction import repair
from aftpipe.store import ManifestError, verify_store
from aftpipe.students import StudentConfig
from aftpipe.training import train

from .faultkit import copy_cache, differences, snapshot, store_of


@dataclass(frozen=True)
class Corruption:
    name: str
    fmt: str
    inject: Callable[[Path], None]
    found: str  # what verify names (a substring of one damage line, or of the unreadable-manifest error)
    recomputed: tuple[int, ...] | None  # train shards a repair recomputes; None: the manifest is unreadable

    @property
    def id(self) -> str:
        return f"{self.fmt}-{self.name}"


# --- zarr injections ------------------------------------------------------------------------------------------
def shard(store: Path, i: int, split: str = "train") -> Path:
    return store / split / "features" / "c" / str(i) / "0"


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def edit_zarr_manifest(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda store: edit_json(store / "zarr.json", lambda doc: fn(doc["attributes"]["aftpipe"]))


def edit_features_meta(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda store: edit_json(store / "train" / "features" / "zarr.json", fn)


def relabel(dtype: str, fill: object) -> Callable[[dict], None]:
    def f(meta: dict) -> None:
        meta["data_type"], meta["fill_value"] = dtype, fill
    return f


def set_chunks(meta: dict) -> None:
    meta["codecs"][0]["configuration"]["chunk_shape"] = [8, 32]


def set_shape(meta: dict) -> None:
    meta["shape"] = [110, 32]


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def zarr_index_changed(store: Path) -> None:
    import zarr

    arr = zarr.open_array(str(store), path="train/index", mode="r+")
    arr[7] = 99


def rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path) if path.is_dir() else path.unlink()


ZARR = [
    Corruption("flipped-data-byte", "zarr", lambda s: flip(shard(s, 1), 100), "shard 1 fails its checksum", (1,)),
    Corruption("truncated-shard", "zarr", lambda s: truncate(shard(s, 2)), "shard 2 file has", (2,)),
    Corruption("deleted-shard", "zarr", lambda s: shard(s, 0).unlink(), "shard 0 file is missing", (0,)),
    Corruption("flipped-shard-index", "zarr", lambda s: flip(shard(s, 1), 32 * 32 * 2 + 3), "shard 1 has a damaged shard index",
               (1,)),
    Corruption("flipped-shard-index-crc", "zarr", lambda s: flip(shard(s, 3), -2), "damaged shard index checksum", (3,)),
    Corruption("swapped-shards", "zarr", lambda s: shard(s, 1).write_bytes(shard(s, 0).read_bytes()),
               "shard 1 fails its checksum", (1,)),
    Corruption("dtype-relabelled", "zarr", edit_features_meta(relabel("int16", 0)), "features dtype is <i2", ()),
    Corruption("dtype-relabelled-unreadable", "zarr", edit_features_meta(relabel("int16", "NaN")),
               "features array unreadable", ()),
    Corruption("shape-changed", "zarr", edit_features_meta(set_shape), "features shape is [110, 32]", ()),
    Corruption("chunks-changed", "zarr", edit_features_meta(set_chunks), "features chunks is [8, 32]", ()),
    Corruption("features-metadata-deleted", "zarr", lambda s: (s / "train/features/zarr.json").unlink(),
               "features array unreadable", ()),
    Corruption("features-metadata-invalid-json", "zarr", lambda s: (s / "train/features/zarr.json").write_text("{"),
               "features array unreadable", ()),
    Corruption("index-value-changed", "zarr", zarr_index_changed, "index array fails its checksum", ()),
    Corruption("index-deleted", "zarr", lambda s: rm(s / "train" / "index"), "index array unreadable", ()),
    Corruption("split-deleted", "zarr", lambda s: rm(s / "train"), "features array unreadable", (0, 1, 2, 3)),
    Corruption("manifest-checksum-key-missing", "zarr",
               edit_zarr_manifest(lambda m: m["splits"]["train"]["shards"][2].pop("sha256")),
               "shard 2: manifest entry damaged", (2,)),
    Corruption("manifest-checksum-altered", "zarr",
               edit_zarr_manifest(lambda m: m["splits"]["train"]["shards"][1].update(sha256="0" * 64)),
               "shard 1 fails its checksum", (1,)),
    Corruption("manifest-rows-changed", "zarr", edit_zarr_manifest(lambda m: m["splits"]["train"].update(n=125)),
               "do not tile its 125 rows", (0, 1, 2, 3)),
    Corruption("manifest-dim-changed", "zarr", edit_zarr_manifest(lambda m: m["splits"]["train"].update(d=33)),
               "disagree with its own features binding", (0, 1, 2, 3)),
    Corruption("manifest-invalid-json", "zarr", lambda s: (s / "zarr.json").write_text('{"attributes": {"aftpipe": '),
               "unreadable manifest (zarr.json: JSONDecodeError", None),
    Corruption("manifest-deleted", "zarr", lambda s: (s / "zarr.json").unlink(), "zarr.json is missing", None),
    Corruption("manifest-sections-missing", "zarr", edit_zarr_manifest(lambda m: m.pop("key")),
               "no `key.storage` section", None),
]


# --- hdf5 injections ------------------------------------------------------------------------------------------
def h5_offset(store: Path, row: int) -> int:
    with h5py.File(store, "r") as f:
        d = f["train/features"]
        return d.id.get_offset() + row * d.shape[1] * d.dtype.itemsize


def h5_replace_features(**create: object) -> Callable[[Path], None]:
    def f(store: Path) -> None:
        with h5py.File(store, "a") as h:
            x = h["train/features"][:]
            del h["train/features"]
            h["train"].create_dataset("features", data=x.astype(create.pop("dtype", x.dtype)), **create)
    return f


def h5_edit(fn: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    def f(store: Path) -> None:
        with h5py.File(store, "a") as h:
            fn(h)
    return f


def h5_manifest(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def f(h: h5py.File) -> None:
        m = json.loads(h.attrs["aftpipe"])
        fn(m)
        h.attrs["aftpipe"] = json.dumps(m)
    return h5_edit(f)


def h5_index_changed(h: h5py.File) -> None:
    h["train/index"][7] = 99


HDF5 = [
    Corruption("flipped-data-byte", "hdf5", lambda s: flip(s, h5_offset(s, 40) + 5), "shard 1 fails its checksum", (1,)),
    Corruption("truncated-file", "hdf5", truncate, "not a readable HDF5 file", None),
    Corruption("features-dtype-changed", "hdf5", h5_replace_features(dtype=np.float32), "features dtype is <f4",
               (0, 1, 2, 3)),
    Corruption("features-made-chunked", "hdf5", h5_replace_features(chunks=(16, 32)), "features layout is chunked",
               (0, 1, 2, 3)),
    Corruption("features-deleted", "hdf5", h5_edit(lambda h: h["train"].pop("features")), "features array unreadable",
               (0, 1, 2, 3)),
    Corruption("index-value-changed", "hdf5", h5_edit(h5_index_changed), "index array fails its checksum", ()),
    Corruption("index-deleted", "hdf5", h5_edit(lambda h: h["train"].pop("index")), "index array unreadable", ()),
    Corruption("manifest-checksum-key-missing", "hdf5",
               h5_manifest(lambda m: m["splits"]["train"]["shards"][2].pop("sha256")), "shard 2: manifest entry damaged",
               (2,)),
    Corruption("manifest-checksum-altered", "hdf5",
               h5_manifest(lambda m: m["splits"]["train"]["shards"][0].update(sha256="f" * 64)),
               "shard 0 fails its checksum", (0,)),
    Corruption("manifest-rows-changed", "hdf5", h5_manifest(lambda m: m["splits"]["train"].update(n=90)),
               "do not tile its 90 rows", (0, 1, 2, 3)),
    Corruption("manifest-invalid-json", "hdf5", h5_edit(lambda h: h.attrs.__setitem__("aftpipe", "{not json")),
               "unreadable manifest (`aftpipe` attribute: JSONDecodeError", None),
    Corruption("manifest-deleted", "hdf5", h5_edit(lambda h: h.attrs.__delitem__("aftpipe")), "no `aftpipe` attribute",
               None),
]

CORRUPTIONS = ZARR + HDF5
SMALL = StudentConfig(vocab_size=200, embed_dim=16, width=16, max_length=16)


@pytest.mark.parametrize("case", CORRUPTIONS, ids=lambda c: c.id)
def test_damage_is_named_refused_and_repaired(case, clean_stores, fault_data, tiny_hf_dir, tmp_path, cli):
    cache = copy_cache(clean_stores[case.fmt], tmp_path / "cache")
    store = store_of(cache, tiny_hf_dir, case.fmt)
    clean = snapshot(store_of(clean_stores[case.fmt], tiny_hf_dir, case.fmt))
    case.inject(store)

    # verify names it (CLI: the damage lines, or one line for an unreadable manifest)
    code, out, err = cli(["verify", str(store)])
    if case.recomputed is None:
        assert code == 2 and err.count("\n") == 1 and case.found in err and "--overwrite" in err, err
    else:
        assert code == 1 and case.found in err and "--repair" in err.splitlines()[-1], err

    # train refuses it before training anything, in one line, and leaves no run folder
    run = tmp_path / "run"
    with pytest.raises(AftpipeError) as refused:
        train(TrainConfig(dataset=f"tsv:{fault_data}", features=(str(store),), out=str(run), student="bow-mlp",
                          student_options=SMALL, steps=2, threads=1))
    assert "\n" not in str(refused.value) and not run.exists() and not run.with_name("run.partial").exists()

    if case.recomputed is None:  # nothing in the store can be trusted: the named command rebuilds it
        with pytest.raises(ManifestError):
            repair(store)
        command = shlex.split(re.search(r"rebuild it with `([^`]+)`", err).group(1))
        assert command[:2] == ["aftpipe", "extract"] and "--overwrite" in command
        code, _, err2 = cli([*command[1:], "--quiet"])
        assert code == 0, err2
    else:
        results = {r.split: r for r in repair(store)}
        assert results["train"].recomputed == case.recomputed and results["test"].recomputed == ()
    assert verify_store(store).ok
    assert differences(snapshot(store), clean) == []

