import h5py
import numpy as np
import pytest
import zarr

from aftpipe.errors import AftpipeError
from aftpipe.store import SplitPlan, make_writer, open_features
from aftpipe.store.array import bf16_to_f32


def write_store(path, fmt, x, dtype="float16", chunk_rows=64, shard_rows=256, key=None, overwrite=False):
    w = make_writer(path, fmt, key=key or {"source": "test"}, provenance={"source": {"model_id": "t"}},
                    dtype=dtype, chunk_rows=chunk_rows, shard_rows=shard_rows, overwrite=overwrite)
    w.open()
    n = len(x)
    w.plan_split("train", SplitPlan(n, x.shape[1], np.arange(n) * 2, "fp-train"))
    w.begin()
    for i, a in enumerate(range(0, n, w.shard_rows)):
        w.write_shard("train", i, _cast(x[a:a + w.shard_rows], dtype))
    w.finish({})
    return path


def _cast(x, dtype):
    import torch

    if dtype == "bfloat16":
        return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return x.astype(dtype)


@pytest.fixture(params=["zarr", "hdf5"])
def fmt(request):
    return request.param


def _path(tmp_path, fmt):
    return tmp_path / ("s.h5" if fmt == "hdf5" else "s")


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_round_trip_random_rows(tmp_path, fmt, dtype):
    x = np.random.default_rng(0).standard_normal((1000, 24)).astype(np.float32)
    st = open_features(write_store(_path(tmp_path, fmt), fmt, x, dtype=dtype))
    arr = st.split("train", verify=True)
    assert arr.shape == (1000, 24)
    np.testing.assert_array_equal(arr.index, np.arange(1000) * 2)
    idx = np.random.default_rng(1).integers(0, 1000, 300)  # spans every shard, with repeats
    expect = bf16_to_f32(_cast(x, dtype)) if dtype == "bfloat16" else _cast(x, dtype)
    np.testing.assert_array_equal(arr[idx], expect[idx])
    np.testing.assert_array_equal(arr[5], expect[5])
    np.testing.assert_array_equal(arr[990:], expect[990:])
    np.testing.assert_array_equal(arr.to_memory()[idx], expect[idx])
    assert st.verify() == []


def test_stores_are_readable_without_aftpipe(tmp_path):
    x = np.random.default_rng(0).standard_normal((700, 8)).astype(np.float16)
    write_store(tmp_path / "z", "zarr", x)
    write_store(tmp_path / "h.h5", "hdf5", x)
    g = zarr.open_group(str(tmp_path / "z"), mode="r")
    np.testing.assert_array_equal(g["train/features"][:], x)
    assert g.attrs["aftpipe"]["state"] == "complete"
    with h5py.File(tmp_path / "h.h5", "r") as f:
        np.testing.assert_array_equal(f["train/features"][:], x)
        assert f["train/features"].chunks is None  # contiguous: what makes the memory map possible


@pytest.mark.parametrize("stitched", [True, False], ids=["one-stitched-map", "per-shard-gather"])
def test_zarr_shards_are_mapped_not_read_through_zarr(tmp_path, monkeypatch, stitched):
    import aftpipe.store.zarr_store as zs

    if not stitched:  # where shards cannot be mapped back to back, each is mapped alone and batches gathered
        monkeypatch.setattr(zs, "map_stitched", lambda *a, **k: None)
    x = np.random.default_rng(0).standard_normal((5000, 16)).astype(np.float16)
    arr = open_features(write_store(tmp_path / "z", "zarr", x, shard_rows=2048)).split("train")
    assert type(arr).__name__ == "FeatureArray" and len(arr._shards) == (1 if stitched else 3)
    idx = np.random.default_rng(1).integers(0, 5000, 500)  # rows of every shard, unsorted, with repeats
    np.testing.assert_array_equal(arr[idx], x[idx])
    np.testing.assert_array_equal(arr[np.array([4999, 0, 2048, 2047])], x[[4999, 0, 2048, 2047]])
    np.testing.assert_array_equal(arr[np.array([10, 20])], x[[10, 20]])  # a batch inside one shard
    np.testing.assert_array_equal(arr[2040:2060], x[2040:2060])
    assert arr.verify() == []


def test_compressed_zarr_falls_back_to_chunked_reads(tmp_path):
    x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float16)
    src = open_features(write_store(tmp_path / "z", "zarr", x))
    g = zarr.open_group(str(tmp_path / "z"), mode="a")  # someone recompresses the features
    del g["train/features"]
    g.create_array("train/features", data=x, chunks=(64, 8), shards=(256, 8), compressors=zarr.codecs.ZstdCodec())
    arr = open_features(tmp_path / "z").split("train")
    assert type(arr).__name__ == "ChunkedFeatureArray"
    idx = np.array([499, 3, 3, 260])
    np.testing.assert_array_equal(arr[idx], x[idx])
    assert arr.verify() == [] and src.manifest["splits"]["train"]["n"] == 500


def test_verify_detects_a_flipped_byte(tmp_path, fmt):
    x = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float16)
    p = write_store(_path(tmp_path, fmt), fmt, x)
    target = p / "train" / "features" / "c" / "1" / "0" if fmt == "zarr" else p
    if fmt == "zarr":
        offset = 100  # inside shard 1's first chunk
    else:
        with h5py.File(p, "r") as f:  # a byte of row 256 + 5, i.e. shard 1
            offset = f["train/features"].id.get_offset() + 256 * 8 * 2 + 10
    data = bytearray(target.read_bytes())
    data[offset] ^= 0xFF
    target.write_bytes(bytes(data))
    assert [(d.split, d.kind, d.shard) for d in open_features(p).verify()] == [("train", "shard", 1)]
    with pytest.raises(AftpipeError, match="damaged: shard 1 fails its checksum.*--repair"):
        open_features(p).split("train", verify=True)


def test_different_arguments_are_refused_and_nothing_is_lost(tmp_path, fmt):
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float16)
    p = write_store(_path(tmp_path, fmt), fmt, x)
    before = open_features(p).split("train")[np.arange(300)].copy()
    with pytest.raises(AftpipeError, match="different arguments.*pass overwrite=True"):
        write_store(p, fmt, x + 1, key={"source": "another"})
    np.testing.assert_array_equal(open_features(p).split("train")[np.arange(300)], before)
    write_store(p, fmt, x + 1, key={"source": "another"}, overwrite=True)
    np.testing.assert_array_equal(open_features(p).split("train")[np.arange(300)], (x + 1).astype(np.float16))


def test_changed_rows_for_an_existing_split_are_refused(tmp_path, fmt):
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float16)
    p = write_store(_path(tmp_path, fmt), fmt, x)
    w = make_writer(p, fmt, key={"source": "test"}, provenance={}, dtype="float16", chunk_rows=64, shard_rows=256,
                    overwrite=False)
    w.open()
    with pytest.raises(AftpipeError, match="extracted from other data.*fingerprint"):
        w.plan_split("train", SplitPlan(300, 8, np.arange(300), "another-fingerprint"))


def test_unfinished_split_is_not_served(tmp_path, fmt):
    p = _path(tmp_path, fmt)
    w = make_writer(p, fmt, key={}, provenance={}, dtype="float16", chunk_rows=64, shard_rows=256, overwrite=False)
    w.open()
    w.plan_split("train", SplitPlan(600, 4, np.arange(600), "fp"))
    w.begin()
    w.write_shard("train", 0, np.ones((256, 4), np.float16))
    if fmt == "hdf5":  # nothing is published under the final name until every shard is done
        assert not p.exists()
        with pytest.raises(AftpipeError, match="unfinished.*resume"):
            open_features(p)
    else:
        with pytest.raises(AftpipeError, match="unfinished"):
            open_features(p).split("train")


def test_missing_store_and_split_messages(tmp_path):
    with pytest.raises(AftpipeError, match="no feature store at"):
        open_features(tmp_path / "nope")
    x = np.zeros((10, 2), np.float16) + 1
    st = open_features(write_store(tmp_path / "z", "zarr", x))
    with pytest.raises(AftpipeError, match="no split `dev`.*--splits dev"):
        st.split("dev")
