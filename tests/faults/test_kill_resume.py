"""SIGKILL at every write step of an extract, for both backends: the re-run resumes and ends bit-identical
to an uninterrupted run, with nothing left behind (no temp files, no work files, no lock).

The extract runs in a forked child that kills itself with a real SIGKILL (no cleanup, no finally blocks) at
its k-th write step; the write steps are every file rename (zarr's atomic writes of shards and metadata, the
manifest and progress records, the HDF5 work file and its publication: killed after the bytes are written
and before the rename) and every HDF5 shard write (killed after half the shard's rows are on disk).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from aftpipe.extraction import extract
from aftpipe.store import verify_store

from .faultkit import differences, extract_config, snapshot, store_of


class Steps:
    """Counts write steps; in a child process, kills it at step `kill_at`."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.n, self.kill_at = 0, kill_at

    def step(self) -> None:
        self.n += 1
        if self.n == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def instrument(monkeypatch: pytest.MonkeyPatch, steps: Steps) -> None:
    import aftpipe.store.hdf5_store as h5

    real_replace, real_write = os.replace, h5.HDF5Writer._write_rows

    def replace(src, dst, *a, **k):
        steps.step()
        return real_replace(src, dst, *a, **k)

    def write_rows(self, name, start, rows):
        if steps.n + 1 == steps.kill_at:  # a torn shard: half its rows on disk, then the kill
            real_write(self, name, start, rows[: len(rows) // 2])
        steps.step()
        return real_write(self, name, start, rows)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(h5.HDF5Writer, "_write_rows", write_rows)


def killed_at(k: int, run: Callable[[], None]) -> bool:
    """Run `run` in a forked child that SIGKILLs itself at write step k; whether the kill happened."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            import torch

            torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP pool
            with pytest.MonkeyPatch.context() as mp:
                instrument(mp, Steps(kill_at=k))
                run()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def leftovers(cache: Path) -> list[str]:
    """Files a finished extract must not leave: zarr temp files, HDF5 work files, locks."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.name.endswith((".partial", ".partial.json", ".partial.new", ".lock")))


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_sigkill_at_every_write_step_resumes_bit_identical(fmt, fault_data, clean_stores, tiny_hf_dir, tmp_path,
                                                           monkeypatch, record_property):
    clean = snapshot(store_of(clean_stores[fmt], tiny_hf_dir, fmt))
    counter = Steps()
    with monkeypatch.context() as mp:
        instrument(mp, counter)
        extract(extract_config(fault_data, tmp_path / "count", tiny_hf_dir, fmt))
    assert counter.n >= 10
    survived = []
    for k in range(1, counter.n + 1):
        cache = tmp_path / f"kill-{k}"
        cfg = extract_config(fault_data, cache, tiny_hf_dir, fmt)
        assert killed_at(k, lambda: extract(cfg)), f"the child was not killed at step {k}"
        extract(cfg)  # the same command again
        store = store_of(cache, tiny_hf_dir, fmt)
        assert verify_store(store).ok, k
        assert differences(snapshot(store), clean) == [], k
        assert leftovers(cache) == [], k
        survived.append(k)
    record_property("kill_points", counter.n)
    record_property("bit_identical", len(survived))
    assert survived == list(range(1, counter.n + 1))
