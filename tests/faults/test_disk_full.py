"""A full disk at every write step of an extract that adds a split to a finished store, for both backends:
a one-line error (exit 2), the finished split still whole, nothing left taking space, and the same command
after space is freed ends bit-identical to an uninterrupted extract. Also the space check before writing."""

from __future__ import annotations

import errno
import json
import os
import shlex

import h5py
import pytest

from aftpipe.config import command_line
from aftpipe.extraction import extract
from aftpipe.store import open_features, verify_store

from .faultkit import differences, extract_config, snapshot, store_of


class DiskFull:
    """Raises OSError(ENOSPC) at the k-th write step (None: counts them)."""

    def __init__(self, at: int | None = None) -> None:
        self.n, self.at = 0, at

    def step(self) -> None:
        self.n += 1
        if self.n == self.at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def instrument(mp: pytest.MonkeyPatch, disk: DiskFull) -> None:
    """The write steps: every rename (zarr's atomic writes, manifests, progress records, HDF5 work files),
    every HDF5 file opened for writing, every shard written through the HDF5 memory map."""
    import aftpipe.store.hdf5_store as h5

    real_replace, real_file, real_rows = os.replace, h5py.File, h5.HDF5Writer._write_rows

    def replace(src, dst, *a, **k):
        disk.step()
        return real_replace(src, dst, *a, **k)

    def file(name, mode="r", *a, **k):
        if mode != "r":
            disk.step()
        return real_file(name, mode, *a, **k)

    def write_rows(self, name, start, rows):
        disk.step()
        return real_rows(self, name, start, rows)

    mp.setattr(os, "replace", replace)
    mp.setattr(h5py, "File", file)
    mp.setattr(h5.HDF5Writer, "_write_rows", write_rows)


def command(cfg) -> list[str]:
    return [*shlex.split(command_line(cfg, "extract"))[1:], "--quiet"]


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_disk_full_at_every_write_step(fmt, fault_data, clean_stores, tiny_hf_dir, tmp_path, monkeypatch, cli,
                                       one_line_error, record_property):
    clean_store = store_of(clean_stores[fmt], tiny_hf_dir, fmt)
    clean = snapshot(clean_store)
    first = lambda cache: extract_config(fault_data, cache, tiny_hf_dir, fmt, splits=("test",))  # noqa: E731
    full = lambda cache: extract_config(fault_data, cache, tiny_hf_dir, fmt, splits=("train", "test"))  # noqa: E731
    extract(first(tmp_path / "count"))
    disk = DiskFull()
    with monkeypatch.context() as mp:
        instrument(mp, disk)
        extract(full(tmp_path / "count"))
    assert disk.n >= 8
    recovered = []
    for k in range(1, disk.n + 1):
        cache = tmp_path / f"full-{k}"
        extract(first(cache))
        store = store_of(cache, tiny_hf_dir, fmt)
        held = snapshot(store)["test"]
        with monkeypatch.context() as mp:
            instrument(mp, DiskFull(at=k))
            code, _, err = cli(command(full(cache)))
        last = err.strip().splitlines()[-1]  # after the progress lines of what did get done
        assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
        assert last.startswith("error: no space left on the device") and "re-run the same command" in last, err
        assert snapshot(store)["test"] == held, k  # the finished split is whole
        assert not list(cache.rglob("*.partial.new")) and not list(cache.rglob("*.lock")), k
        code, _, err = cli(command(full(cache)))  # space freed: the same command
        assert code == 0, err
        assert verify_store(store).ok and differences(snapshot(store), clean) == [], k
        if fmt == "hdf5":  # no dead datasets of the failed attempt: at most one superseded manifest attribute
            manifest = len(json.dumps(open_features(store).manifest, sort_keys=True))
            assert store.stat().st_size <= clean_store.stat().st_size + manifest + 512, k
        recovered.append(k)
    record_property("enospc_points", disk.n)
    record_property("recovered", len(recovered))
    assert recovered == list(range(1, disk.n + 1))


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_not_enough_space_is_refused_before_writing(fmt, fault_data, tiny_hf_dir, tmp_path, monkeypatch, cli,
                                                    one_line_error):
    import aftpipe.store.base as base
    import aftpipe.store.hdf5_store as h5

    cache = tmp_path / "c"
    extract(extract_config(fault_data, cache, tiny_hf_dir, fmt, splits=("test",)))
    store = store_of(cache, tiny_hf_dir, fmt)
    before = snapshot(store)
    for module in (base, h5):
        monkeypatch.setattr(module, "free_bytes", lambda path: 1000)
    code, _, err = cli(command(extract_config(fault_data, cache, tiny_hf_dir, fmt)))
    one_line_error(code, err, "not enough space for the store", "free some space or pass another --cache-dir")
    assert snapshot(store) == before and open_features(store).splits == ["test"]
    assert not [p for p in cache.rglob("*") if p.name.endswith((".partial", ".partial.new", ".lock"))]

