"""No code runs from a file someone hands over: a malicious pickle (its `__reduce__` creates a marker file) is
planted wherever a loader looks — a run folder's checkpoint (new and old names), a finished run's weights,
a timm student's pretrained weights, a model directory's pytorch_model.bin for the hf and timm sources — and
every command that reads it refuses with one line while the marker never appears. A control unpickles the
payload directly, to show it is live."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from aftpipe import rundir

from .faultkit import store_of


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran"


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"state": Payload(marker)})


def evil_torch_file(path: Path, marker: Path) -> Path:
    torch.save({"weight": torch.ones(2), "extra": Payload(marker)}, path)  # torch's zip format, pickled inside
    return path


def test_the_payload_is_live(marker, tmp_path):
    pickle.loads(evil_pickle(marker))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil_torch_file(tmp_path / "w.pt", marker), weights_only=True)
    assert not marker.exists()
    torch.load(tmp_path / "w.pt", weights_only=False)  # what aftpipe never does
    assert marker.exists()


def _train(data: Path, store: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", f"tsv:{data}", "--features", str(store), "--student", "bow-mlp", "--vocab-size",
            "200", "--embed-dim", "16", "--width", "16", "--steps", "2", "--threads", "1", "--quiet", "--out",
            str(out), *extra]


def _assert_refused(code: int, err: str, marker: Path, *needles: str) -> None:
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err and last.startswith("error:"), err
    assert all(n in last for n in needles), last
    assert not marker.exists(), "code ran from a planted file"


@pytest.fixture
def store(clean_stores, tiny_hf_dir) -> Path:
    return store_of(clean_stores["zarr"], tiny_hf_dir, "zarr")


def test_planted_checkpoints_never_run(marker, fault_data, store, tmp_path, cli, record_property):
    out = tmp_path / "run"
    work = rundir.work_dir(out)
    work.mkdir()
    (work / rundir.CHECKPOINT).write_bytes(evil_pickle(marker))  # a pickle under the checkpoint's name
    code, _, err = cli(_train(fault_data, store, out, "--resume"))
    _assert_refused(code, err, marker, "checkpoint", "is damaged")
    shutil.rmtree(work)
    out.mkdir()
    (out / rundir.LEGACY_CHECKPOINT).write_bytes(evil_pickle(marker))  # the name older versions unpickled
    code, _, err = cli(_train(fault_data, store, out, "--resume"))
    _assert_refused(code, err, marker, "checkpoint.pt", "never loads")
    record_property("planted", 2)


def test_a_pipeline_never_resumes_from_a_planted_checkpoint(marker, fault_data, store, tiny_hf_dir, tmp_path, cli,
                                                           record_property):
    """`aftpipe run` resumes unfinished runs by itself: a crafted run folder in a shared runs dir."""
    shutil.copytree(store.parent.parent, tmp_path / "cache")
    (tmp_path / "p.yaml").write_text(f"dataset: tsv:{fault_data}\nsources: {{bert: [hf:{tiny_hf_dir}]}}\n"
                                     "students: [bow-mlp]\nmethods: [{name: none}]\ntrain: {steps: 2, threads: 1}\n"
                                     "extract: {name: data}\n")
    run = tmp_path / "runs" / "p" / "none-bert-bow-mlp-b0-lr0.001-s0"
    run.mkdir(parents=True)
    (run / rundir.LEGACY_CHECKPOINT).write_bytes(evil_pickle(marker))
    code, _, err = cli(["run", str(tmp_path / "p.yaml"), "--cache-dir", str(tmp_path / "cache"), "--runs-dir",
                        str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--quiet"])
    _assert_refused(code, err, marker, "checkpoint.pt")
    record_property("planted", 1)


def test_planted_weights_of_a_finished_run_never_run(marker, fault_data, store, tmp_path, cli, record_property):
    out = tmp_path / "run"
    assert cli(_train(fault_data, store, out))[0] == 0
    (out / "student.safetensors").write_bytes(evil_pickle(marker))
    _assert_refused(*cli(["evaluate", str(out)])[::2], marker, "cannot be loaded")
    probe = tmp_path / "probe"
    assert cli(_train(fault_data, store, probe, "--method", "linear_probe"))[0] == 0
    (probe / "head.safetensors").write_bytes(evil_pickle(marker))
    _assert_refused(*cli(["evaluate", str(probe)])[::2], marker, "cannot be loaded")
    record_property("planted", 2)


def test_a_planted_cached_head_never_runs(marker, fault_data, store, tmp_path, cli, record_property):
    """Heads fitted on a store are kept beside it and read back by later runs: a pickle planted there."""
    shutil.copytree(store.parent.parent, tmp_path / "cache")
    features = tmp_path / "cache" / store.parent.name / store.name
    shutil.rmtree(features.parent / "heads", ignore_errors=True)  # heads other tests kept beside the same store
    assert cli(_train(fault_data, features, tmp_path / "first", "--method", "linear_probe"))[0] == 0
    [kept] = [p for p in (features.parent / "heads").iterdir() if p.is_dir()]  # beside it: the fit's lock file
    (kept / "head.safetensors").write_bytes(evil_pickle(marker))
    code, _, err = cli(_train(fault_data, features, tmp_path / "second", "--method", "linear_probe"))
    assert code == 0, err  # the damaged head is fitted again, not loaded
    assert not marker.exists(), "code ran from a planted file"
    record_property("planted", 1)


def test_planted_pretrained_student_weights_never_run(marker, tmp_path, cli, record_property):
    weights = evil_torch_file(tmp_path / "resnet.pth", marker)
    code, _, err = cli(["train", "--dataset", "digits", "--student", "timm:test_resnet", "--pretrained", str(weights),
                        "--method", "none", "--steps", "1", "--quiet", "--out", str(tmp_path / "run")])
    _assert_refused(code, err, marker, "not a plain file of tensors")
    record_property("planted", 1)


def test_planted_model_weights_never_run(marker, tiny_hf_dir, tiny_timm_dir, fault_data, tmp_path, cli,
                                        record_property):
    hf = tmp_path / "hf-model"
    shutil.copytree(tiny_hf_dir, hf)
    (hf / "model.safetensors").unlink()
    evil_torch_file(hf / "pytorch_model.bin", marker)
    code, _, err = cli(["extract", "--dataset", f"tsv:{fault_data}", "--source", f"hf:{hf}", "--cache-dir",
                        str(tmp_path / "c"), "--quiet", "--workers", "0"])
    _assert_refused(code, err, marker, "could not load model")
    tm = tmp_path / "timm-model"
    shutil.copytree(tiny_timm_dir, tm)
    for f in tm.glob("*.safetensors"):
        f.unlink()
    evil_torch_file(tm / "pytorch_model.bin", marker)
    code, _, err = cli(["extract", "--dataset", "digits", "--source", f"timm:{tm}", "--splits", "test", "--cache-dir",
                        str(tmp_path / "c"), "--quiet", "--workers", "0"])
    _assert_refused(code, err, marker, "could not load timm weights")
    record_property("planted", 2)
