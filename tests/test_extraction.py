"""End to end extraction on tiny real inputs: both formats, resume, refusals, the lock."""

import json

import numpy as np
import pytest

from aftpipe.config import DatasetOptions, ExtractConfig
from aftpipe.data import load_dataset
from aftpipe.errors import AftpipeError
from aftpipe.extraction import extract
from aftpipe.progress import SilentProgress
from aftpipe.sources import SourceOptions
from aftpipe.store import StoreLock, open_features

WHOLE = DatasetOptions(test_fraction=0)  # extraction itself is tested on the file read whole


def cfg(tiny_hf_dir, reviews_tsv, tmp_path, **kw):
    base = dict(dataset=f"tsv:{reviews_tsv}", sources=(f"hf:{tiny_hf_dir}",), cache_dir=str(tmp_path / "cache"),
                chunk_rows=16, shard_rows=64, batch_size=16, workers=0, dataset_options=WHOLE, name="reviews")
    return ExtractConfig(**{**base, **kw})


def test_zarr_and_hdf5_hold_the_same_rows_in_dataset_order(tiny_hf_dir, reviews_tsv, tmp_path):
    from aftpipe.sources import load_source

    [rz] = extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path))
    [rh] = extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path, format="hdf5"))
    assert rz.path.name == "hf-" + tiny_hf_dir.name and rh.path.suffix == ".h5"
    z, h = open_features(rz.path).split("train"), open_features(rh.path).split("train")
    assert z.shape == h.shape == (300, 32)
    np.testing.assert_array_equal(z[np.arange(300)], h[np.arange(300)])
    # rows are in dataset order whatever the length-sorted batching did
    src = load_source(f"hf:{tiny_hf_dir}")
    split = load_dataset(f"tsv:{reviews_tsv}", options=WHOLE).split("train")
    rows = [7, 250, 0]
    ref = src.forward(src.collate([split.inputs[i] for i in rows])).numpy()
    np.testing.assert_allclose(z[np.array(rows)].astype(np.float32), ref, atol=2e-3, rtol=2e-3)
    m = open_features(rz.path).manifest
    assert m["splits"]["train"]["fingerprint"] == split.fingerprint()
    assert m["source"]["pooling"] == "mean" and m["state"] == "complete"
    assert len(m["splits"]["train"]["shards"]) == 5 and all(s["sha256"] for s in m["splits"]["train"]["shards"])


class Crash(Exception):
    pass


class CrashAfter(SilentProgress):
    def __init__(self, rows):
        self.left, self.logs = rows, []

    def advance(self, n):
        self.left -= n
        if self.left <= 0:
            raise Crash()

    def log(self, message):
        self.logs.append(message)


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_interrupted_extract_resumes_and_is_bit_identical(tiny_hf_dir, reviews_tsv, tmp_path, fmt):
    c = cfg(tiny_hf_dir, reviews_tsv, tmp_path / "a", format=fmt)
    with pytest.raises(Crash):
        extract(c, CrashAfter(150))  # ~2 of 5 shards written
    resumed = CrashAfter(10**9)
    [r] = extract(c, resumed)
    assert r.shards_skipped >= 1 and r.shards_done == 5 - r.shards_skipped
    assert any("already done (skipped)" in m for m in resumed.logs)
    [clean] = extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path / "b", format=fmt))
    a, b = open_features(r.path), open_features(clean.path)
    np.testing.assert_array_equal(a.split("train")[np.arange(300)], b.split("train")[np.arange(300)])
    assert [s["sha256"] for s in a.manifest["splits"]["train"]["shards"]] == \
           [s["sha256"] for s in b.manifest["splits"]["train"]["shards"]]


def test_rerun_of_a_finished_store_computes_nothing(tiny_hf_dir, reviews_tsv, tmp_path):
    c = cfg(tiny_hf_dir, reviews_tsv, tmp_path)
    [first] = extract(c)
    before = (first.path / "zarr.json").read_text()
    [again] = extract(c)
    assert again.shards_done == 0 and again.shards_skipped == 5
    assert (first.path / "zarr.json").read_text() == before


def test_changed_dataset_rows_are_refused(tiny_hf_dir, reviews_tsv, tmp_path):
    extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path))
    lines = reviews_tsv.read_text().splitlines()
    lines[10] = "a different sentence\t1"
    reviews_tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(AftpipeError, match="other data.*fingerprint.*pass overwrite=True"):
        extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path))
    [r] = extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path, overwrite=True))
    assert r.shards_done == 5


def test_other_arguments_are_refused_unless_overwrite(tiny_hf_dir, reviews_tsv, tmp_path):
    [r] = extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path))
    manifest = json.loads((r.path / "zarr.json").read_text())
    with pytest.raises(AftpipeError, match="different arguments.*dtype.*pass overwrite=True"):
        extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path, dtype="float32"))
    assert json.loads((r.path / "zarr.json").read_text()) == manifest  # untouched
    extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path, dtype="float32", overwrite=True))
    assert open_features(r.path).split("train").dtype == np.float32


def test_a_second_writer_is_locked_out(tiny_hf_dir, reviews_tsv, tmp_path):
    c = cfg(tiny_hf_dir, reviews_tsv, tmp_path)
    path = tmp_path / "cache" / "reviews" / f"hf-{tiny_hf_dir.name}"
    path.parent.mkdir(parents=True)
    with StoreLock(path):
        with pytest.raises(AftpipeError, match="is being written by pid"):
            extract(c)
    extract(c)  # the lock is released with its holder


def test_unknown_split_and_unwritable_cache(tiny_hf_dir, reviews_tsv, tmp_path):
    with pytest.raises(AftpipeError, match="has no split `dev`"):
        extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path, splits=("dev",)))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AftpipeError, match="cannot create.*writable `cache_dir`"):
        extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path, cache_dir=str(blocker / "cache")))


def test_multi_source_and_limit_on_real_sst2(tiny_hf_dir, data_dir, tmp_path):
    c = ExtractConfig(dataset="sst2", sources=(f"hf:{tiny_hf_dir}", "tfidf"), splits=("dev",), limit=100,
                      data_dir=str(data_dir), cache_dir=str(tmp_path), workers=1,
                      source_options=SourceOptions(tfidf_dim=16))
    res = extract(c)
    assert [(r.source, r.rows, r.dim) for r in res] == [(f"hf-{tiny_hf_dir.name}", 100, 32), ("tfidf", 100, 16)]
    st = open_features(tmp_path / "sst2" / "tfidf")
    assert st.manifest["source"]["fitted_on"] == "train" and np.isfinite(st.split("dev")[np.arange(100)]).all()


def test_digits_through_a_timm_source(tiny_timm_dir, tmp_path):
    [r] = extract(ExtractConfig(dataset="digits", sources=(f"timm:{tiny_timm_dir}",), splits=("test",),
                                cache_dir=str(tmp_path), workers=0))
    arr = open_features(r.path).split("test")
    assert arr.shape[0] == len(load_dataset("digits").split("test")) and np.isfinite(arr[np.arange(10)]).all()


def test_batches_are_sorted_by_token_count_not_characters(tiny_hf_dir, tmp_path):
    """A text of few characters but many WordPieces (digits and punctuation) is batched with the long ones:
    padding follows tokens. Lengths come from one batch call of the tokenizer and equal its own counts."""
    from aftpipe.data.base import Split
    from aftpipe.extraction import shard_batches
    from aftpipe.sources import load_source

    src = load_source(f"hf:{tiny_hf_dir}")
    texts = ["a b", "1,2;3.4!5?6", "the quick brown fox jumps", "cat", "x y z w v u t s r q"]
    counts = [len(src.tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts]
    assert src.lengths(texts).tolist() == counts and src.length(texts[1]) == counts[1]
    long = " ".join(["fox"] * 400)  # truncated as collate truncates, special tokens included
    assert len(src.collate([long, "cat"])["input_ids"][0]) == src.length(long) == 256
    assert src.lengths(texts).tolist() == counts  # a padded collate in between leaves no padding behind
    assert counts[1] > counts[2] and len(texts[1]) < len(texts[2])  # the premise: chars and tokens disagree
    split = Split("train", [str(i) for i in range(5)], texts, np.zeros(5))
    batches = shard_batches(split, src, 0, 5, 2)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4] and [len(b) for b in batches] == [2, 2, 1]
    assert [counts[i] for i in order] == sorted(counts, reverse=True)


def test_a_row_the_loop_never_computes_fails_the_shard(tiny_hf_dir, reviews_tsv, tmp_path, monkeypatch):
    """A lost batch must not let a shard be written with stale memory in it: the shard is refused."""
    import aftpipe.extraction as ex

    real = ex.shard_batches
    monkeypatch.setattr(ex, "shard_batches", lambda *a: real(*a)[:-1])  # the shortest batch of each shard is lost
    with pytest.raises(RuntimeError, match="rows were never computed"):
        extract(cfg(tiny_hf_dir, reviews_tsv, tmp_path))


def test_a_text_extract_imports_no_vision_plotting_hdf5_or_sklearn(tiny_hf_dir, reviews_tsv, tmp_path):
    """Start-up: a transformers source pulls in none of timm, torchvision, h5py, matplotlib, scikit-learn
    (transformers itself would import torchvision and scipy for image code a text encoder never runs)."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import sys
from aftpipe.config import DatasetOptions, ExtractConfig
from aftpipe.extraction import extract
extract(ExtractConfig(dataset="tsv:{reviews_tsv}", sources=("hf:{tiny_hf_dir}",), cache_dir="{tmp_path}", workers=1))
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"timm", "torchvision", "h5py", "matplotlib", "sklearn", "scipy"}}))
import torchvision  # and they still import afterwards
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
