"""Regression tests, one per failure a hostile new user found, as they would run into it. The rest of the
list is covered where it belongs: code execution from planted files in test_no_pickle.py, tracebacks and
nonsense accepted in test_bad_inputs.py, a full disk in test_disk_full.py, every damage kind in
test_corruption.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from aftpipe import rundir
from aftpipe.config import TrainConfig
from aftpipe.extraction import extract
from aftpipe.store import open_features, verify_store
from aftpipe.students import StudentConfig

from .faultkit import copy_cache, differences, extract_config, snapshot, store_of

SMALL = ["--student", "bow-mlp", "--vocab-size", "200", "--embed-dim", "16", "--width", "16", "--threads", "1",
         "--quiet"]


def test_a_relabelled_dtype_is_damage_not_data(clean_stores, tiny_hf_dir, fault_data, tmp_path, cli):
    """float16 rows read as int16 (values like -18925) were verified ok and trained on."""
    cache = copy_cache(clean_stores["zarr"], tmp_path / "c")
    store = store_of(cache, tiny_hf_dir, "zarr")
    meta = store / "train" / "features" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["data_type"], doc["fill_value"] = "int16", 0
    meta.write_text(json.dumps(doc))
    code, _, err = cli(["verify", str(store)])
    assert code == 1 and "train: features dtype is <i2, the manifest says <f2" in err
    code, _, err = cli(["train", "--dataset", f"tsv:{fault_data}", "--features", str(store), "--steps", "2",
                        "--out", str(tmp_path / "run"), *SMALL])
    assert code == 2 and "is damaged: features dtype is <i2" in err and not (tmp_path / "run").exists()


def test_two_trains_on_one_out_the_second_is_refused(clean_stores, tiny_hf_dir, fault_data, tmp_path, cli,
                                                     wait_for):
    """Two trains on one --out ended with B's config.yaml and A's metrics and weights."""
    store = store_of(clean_stores["zarr"], tiny_hf_dir, "zarr")
    out = tmp_path / "run"
    base = ["train", "--dataset", f"tsv:{fault_data}", "--features", str(store), "--out", str(out), *SMALL]
    first = subprocess.Popen([sys.executable, "-m", "aftpipe.cli", *base, "--steps", "800", "--eval-every", "400"],
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (rundir.work_dir(out) / rundir.CONFIG).exists(), first, "the first train wrote its config")
    code, _, err = cli([*base, "--steps", "5", "--lr", "0.1"])
    assert code == 2 and f"run folder {out} is being written by pid {first.pid}" in err, err
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert rundir.read_config_dict(out)["lr"] == 0.001 and rundir.read_result(out).steps == 800
    code, text, _ = cli(["evaluate", str(out)])
    assert code == 0 and json.loads(text)["match"] is True


def test_a_leftover_hdf5_partial_never_costs_finished_splits(fault_data, tiny_hf_dir, tmp_path, cli):
    """A good .h5 holding one split and an empty valid .h5.partial beside it: adding a split dropped the first."""
    cache = tmp_path / "c"
    extract(extract_config(fault_data, cache, tiny_hf_dir, "hdf5", splits=("test",)))
    store = store_of(cache, tiny_hf_dir, "hdf5")
    held = snapshot(store)["test"]
    partial = store.with_name(store.name + ".partial")
    with h5py.File(partial, "w"):
        pass
    extract(extract_config(fault_data, cache, tiny_hf_dir, "hdf5", splits=("train",)))
    assert open_features(store).splits == ["test", "train"] and snapshot(store)["test"] == held
    assert not partial.exists()
    # a truncated partial with its progress record: discarded with a message, and --overwrite works too
    extract(extract_config(fault_data, tmp_path / "d", tiny_hf_dir, "hdf5", splits=("test",)))
    store = store_of(tmp_path / "d", tiny_hf_dir, "hdf5")
    shutil.copy(store, store.with_name(store.name + ".partial"))
    store.with_name(store.name + ".partial.json").write_text(json.dumps(open_features(store).manifest))
    partial = store.with_name(store.name + ".partial")
    partial.write_bytes(partial.read_bytes()[:5000])
    args = ["extract", *[str(a) for a in _args(fault_data, tmp_path / "d", tiny_hf_dir)], "--splits", "train"]
    code, _, err = cli(args)
    assert code == 0 and "discarding" in err and open_features(store).splits == ["test", "train"], err
    partial.write_bytes(b"garbage")
    store.with_name(store.name + ".partial.json").write_text("{}")
    assert cli([*args, "--overwrite"])[0] == 0 and open_features(store).splits == ["train"]


def _args(data: Path, cache: Path, model: Path) -> list[str]:
    return ["--dataset", f"tsv:{data}", "--source", f"hf:{model}", "--cache-dir", str(cache), "--name", "data", "--format", "hdf5",
            "--shard-rows", "32", "--chunk-rows", "16", "--workers", "0", "--quiet"]


def test_rerunning_the_extract_recomputes_exactly_the_damaged_shards(clean_stores, fault_data, tiny_hf_dir, tmp_path):
    """After any shard damage the same extract said 'all shards already done' and exited 0."""
    for fmt in ("zarr", "hdf5"):
        cache = copy_cache(clean_stores[fmt], tmp_path / fmt)
        store = store_of(cache, tiny_hf_dir, fmt)
        clean = snapshot(store)
        st = open_features(store)
        rows = st.split("train")._raw_rows(64, 96)
        target = store / "train/features/c/2/0" if fmt == "zarr" else store
        data = bytearray(target.read_bytes())
        data[data.find(rows.tobytes()) + 7] ^= 1  # a byte of shard 2, wherever the format put it
        target.write_bytes(bytes(data))
        results = {r.split: r for r in extract(extract_config(fault_data, cache, tiny_hf_dir, fmt))}
        assert results["train"].recomputed == (2,) and results["test"].recomputed == ()
        assert results["train"].repaired == ("shard 2 fails its checksum",)
        assert differences(snapshot(store), clean) == []


def test_verify_fails_an_unfinished_store_and_checks_the_index(clean_stores, tiny_hf_dir, tmp_path, cli):
    """verify said '16 shards in 0 splits match' (exit 0) on an unfinished store and never read the index."""
    cache = copy_cache(clean_stores["zarr"], tmp_path / "c")
    store = store_of(cache, tiny_hf_dir, "zarr")
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["aftpipe"]["splits"]["test"]["shards"][1].update(done=False, sha256=None)
    (store / "zarr.json").write_text(json.dumps(doc))
    code, _, err = cli(["verify", str(store)])
    assert code == 1 and "test: unfinished (1/2 shards done)" in err and "re-running the extract" in err
    import zarr

    zarr.open_array(str(store), path="train/index", mode="r+")[3] = 4
    report = verify_store(store)
    assert [(d.split, d.kind) for d in report.damage] == [("test", "unfinished"), ("train", "index")]


def test_partial_stores_are_refused_or_stated_and_every_method_scores_the_same_rows(fault_data, tiny_hf_dir,
                                                                                      tmp_path):
    """A --limit store trained on a subset without a word; the probe scored only the test rows it held."""
    import pytest

    from aftpipe.api import train
    from aftpipe.errors import AftpipeError

    extract(extract_config(fault_data, tmp_path / "c", tiny_hf_dir, "zarr", limit=30))
    store = str(store_of(tmp_path / "c", tiny_hf_dir, "zarr"))
    cfg = dict(dataset=f"tsv:{fault_data}", features=(store,), student="bow-mlp", steps=3, threads=1,
               student_options=StudentConfig(vocab_size=200, embed_dim=16, width=16))
    with pytest.raises(AftpipeError, match="holds 30 of the 120 rows of split `train` .*limit=30.*stored_rows_only=True"):
        train(TrainConfig(**cfg, out=str(tmp_path / "refused")))
    student = train(TrainConfig(**cfg, out=str(tmp_path / "s"), stored_rows_only=True))
    probe = train(TrainConfig(**cfg, out=str(tmp_path / "p"), stored_rows_only=True, method="linear_probe"))
    assert student.rows["stored_rows_only"] == probe.rows["stored_rows_only"] == {"train": [30, 120], "test": [30, 40]}
    assert student.rows["test"] == probe.rows["test"] == 30
    assert student.rows["train"] + student.rows["holdout"] == 30


def test_unlabeled_test_rows_are_refused_not_scored_as_wrong(clean_stores, tiny_hf_dir, fault_data, tmp_path, cli):
    data = tmp_path / "d"
    shutil.copytree(fault_data, data)
    lines = (data / "test.tsv").read_text().splitlines()
    for i in (1, 2):
        lines[i] = lines[i].rsplit("\t", 1)[0] + "\t"
    (data / "test.tsv").write_text("\n".join(lines) + "\n")
    code, _, err = cli(["train", "--dataset", f"tsv:{data}", "--method", "none", "--steps", "2", "--out",
                        str(tmp_path / "run"), *SMALL])
    assert code == 2 and "test split `test` has 2 of 40 rows without a label (first: test.tsv:2)" in err
    assert not (tmp_path / "run").exists() and not rundir.work_dir(tmp_path / "run").exists()


def test_the_hdf5_work_file_never_grows_past_one_store(fault_data, tiny_hf_dir, tmp_path, monkeypatch):
    """Disk full while adding a split, then the re-run: the file was twice the needed size."""
    import errno

    import pytest

    import aftpipe.store.hdf5_store as h5
    from aftpipe.errors import AftpipeError

    cache = tmp_path / "c"
    extract(extract_config(fault_data, cache, tiny_hf_dir, "hdf5", splits=("test",)))
    real = h5.HDF5Writer._write_rows
    calls = []

    def full_disk(self, name, start, rows):
        calls.append(name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, start, rows)

    monkeypatch.setattr(h5.HDF5Writer, "_write_rows", full_disk)
    with pytest.raises(AftpipeError, match="no space left"):
        extract(extract_config(fault_data, cache, tiny_hf_dir, "hdf5"))
    monkeypatch.undo()
    extract(extract_config(fault_data, cache, tiny_hf_dir, "hdf5"))
    store = store_of(cache, tiny_hf_dir, "hdf5")
    extract(extract_config(fault_data, tmp_path / "clean", tiny_hf_dir, "hdf5"))
    clean = store_of(tmp_path / "clean", tiny_hf_dir, "hdf5")
    features = sum(e["n"] * e["d"] * 2 for e in open_features(store).manifest["splits"].values())
    assert store.stat().st_size < clean.stat().st_size + features / 2  # not one dead copy of the rows
    assert np.array_equal(open_features(store).split("train")[np.arange(120)],
                          open_features(clean).split("train")[np.arange(120)])


def test_extract_overwrite_deletes_only_what_the_store_wrote(clean_stores, fault_data, tiny_hf_dir, tmp_path, cli):
    """A run folder someone put inside a store was deleted, without a word, by `extract --overwrite`."""
    from aftpipe.store.zarr_store import foreign_entries

    cache = copy_cache(clean_stores["zarr"], tmp_path / "c")
    store = store_of(cache, tiny_hf_dir, "zarr")
    assert foreign_entries(store) == []  # everything the store code writes is known as its own
    temp = store / "train" / "features" / "c" / "0" / f".{'0' * 32}.partial"
    temp.write_bytes(b"a killed write")
    assert foreign_entries(store) == []
    temp.unlink()
    (store / "myrun").mkdir()
    (store / "myrun" / "metrics.json").write_text("{}")
    (store / "notes.txt").write_text("mine")
    (store / "train" / "features" / "mine.txt").write_text("mine too")
    assert foreign_entries(store) == ["myrun", "notes.txt", "train"]
    held = snapshot(store)
    args = ["extract", "--dataset", f"tsv:{fault_data}", "--name", "data", "--source", f"hf:{tiny_hf_dir}",
            "--cache-dir", str(cache), "--shard-rows", "32", "--chunk-rows", "16", "--workers", "0", "--quiet",
            "--overwrite"]
    code, _, err = cli(args)
    assert code == 2 and "holds myrun, notes.txt, train, which aftpipe did not write" in err, err
    assert (store / "myrun" / "metrics.json").exists() and differences(held, snapshot(store)) == []
    shutil.rmtree(store / "myrun")
    (store / "notes.txt").unlink()
    (store / "train" / "features" / "mine.txt").unlink()
    (store.with_name(store.name + ".journal")).mkdir()
    (store.with_name(store.name + ".journal") / "readme.md").write_text("not a record")
    code, _, err = cli(args)
    assert code == 0, err
    assert verify_store(store).ok and (store.with_name(store.name + ".journal") / "readme.md").exists()


def test_a_text_starting_with_a_quote_is_one_row_as_written(tmp_path, cli):
    """Two reviews starting with `"` merged 300 lines into 290 rows, one of them 11 lines long."""
    words = ["good", "bad", "film", "plot", "actor", "music", "long", "short", "funny", "dull", "score", "cast"]
    lines = [" ".join(words[(i * k + k) % 12] for k in range(1, 5)) + f" {i}\t{i % 2}" for i in range(300)]
    lines[10] = '"the best" film of the year\t1'
    lines[20] = '"unwatchable\t0'
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    (tmp_path / "d" / "test.tsv").write_text("sentence\tlabel\n" + "\n".join(lines[:40]) + "\n")
    code, _, err = cli(["extract", "--dataset", f"tsv:{tmp_path / 'd'}", "--name", "d", "--source", "tfidf",
                        "--tfidf-dim", "8", "--cache-dir", str(tmp_path / "c"), "--workers", "0", "--quiet"])
    assert code == 0, err
    code, out, err = cli(["inspect", str(tmp_path / "c" / "d" / "tfidf")])
    assert code == 0 and "rows:    test 40, train 300" in out, out + err
