"""Fixtures of the fault-injection suite: a tiny labelled text dataset and its feature stores, small enough
that every fault can be injected into a fresh copy (a few shards per split, a 32-wide random BERT)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .faultkit import extract_config


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory, write_reviews) -> Path:
    """train.tsv (120 rows) and test.tsv (40 rows) with a learnable word signal."""
    return write_reviews(tmp_path_factory.mktemp("fault-data") / "data", {"train": 120, "test": 40})


@pytest.fixture(scope="session")
def clean_stores(tmp_path_factory, fault_data, tiny_hf_dir) -> dict[str, Path]:
    """A finished store per format, extracted once: every test copies it before damaging it."""
    from aftpipe.extraction import extract

    out = {}
    for fmt in ("zarr", "hdf5"):
        cache = tmp_path_factory.mktemp(f"clean-{fmt}")
        extract(extract_config(fault_data, cache, tiny_hf_dir, fmt))
        out[fmt] = cache
    return out
