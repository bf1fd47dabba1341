import math

import numpy as np
import pytest
import torch

from aftpipe import rundir
from aftpipe.errors import AftpipeError
from aftpipe.store import WriterLock


def result(accuracy: float) -> rundir.RunResult:
    return rundir.RunResult(metric="accuracy", test={"accuracy": accuracy}, holdout={}, test_split="test")


def test_config_diff_names_every_differing_key_outside_the_ignored_ones():
    old = {"lr": 0.001, "steps": 100, "threads": 2, "gone": 1}
    new = {"lr": 0.003, "steps": 200, "threads": 4, "added": 2}
    assert rundir.config_diff(old, new, ignore={"threads"}) == [
        ("added", None, 2), ("gone", 1, None), ("lr", 0.001, 0.003), ("steps", 100, 200)]
    assert rundir.config_diff(old, dict(old), ignore=()) == []


def test_a_run_is_built_aside_and_published_whole(tmp_path):
    out = tmp_path / "runs" / "r"
    with rundir.writing(out, resume=False, overwrite=False) as work:
        assert work == rundir.work_dir(out) and work.is_dir() and not out.exists()
        (work / "student.safetensors").write_bytes(b"w")
        rundir.finish(work, result(1.0))
    assert rundir.is_finished(out) and (out / "student.safetensors").exists() and not work.exists()
    assert not out.with_name("r.lock").exists()
    with pytest.raises(AftpipeError, match="already holds a finished run"):
        with rundir.writing(out, resume=False, overwrite=False):
            pass
    with rundir.writing(out, resume=True, overwrite=False) as work:
        assert work is None  # finished: nothing to do


def test_a_failed_run_leaves_nothing_unless_it_has_a_checkpoint(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RuntimeError):
        with rundir.writing(out, resume=False, overwrite=False) as work:
            (work / rundir.CONFIG).write_text("lr: 0.1\n")
            raise RuntimeError("failed before the first checkpoint")
    assert not out.exists() and not rundir.work_dir(out).exists()
    with pytest.raises(RuntimeError):
        with rundir.writing(out, resume=False, overwrite=False) as work:
            rundir.save_checkpoint(work, {"step": 3})
            raise RuntimeError("failed after a checkpoint")
    assert rundir.work_dir(out).exists() and not out.exists()  # resumable
    with pytest.raises(AftpipeError, match="holds an unfinished run.*resume=True"):
        with rundir.writing(out, resume=False, overwrite=False):
            pass
    with rundir.writing(out, resume=True, overwrite=False) as work:
        assert rundir.load_checkpoint(work) == {"step": 3}


def test_overwrite_keeps_the_old_run_until_the_new_one_finishes(tmp_path):
    out = tmp_path / "r"
    with rundir.writing(out, False, False) as work:
        rundir.finish(work, result(0.5))
    with pytest.raises(RuntimeError):
        with rundir.writing(out, resume=False, overwrite=True):
            raise RuntimeError("the new run fails")
    assert rundir.read_result(out).score == 0.5
    with rundir.writing(out, resume=False, overwrite=True) as work:
        rundir.finish(work, result(0.9))
    assert rundir.read_result(out).score == 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    out = tmp_path / "r"
    with WriterLock(out, "run folder", "or pass another --out"):
        with pytest.raises(AftpipeError, match=r"run folder .*/r is being written by pid \d+ on .*or pass another out=DIR"):
            with rundir.writing(out, False, False):
                pass
    with rundir.writing(out, False, False) as work:  # released with its holder
        assert work.is_dir()


def test_legacy_pickle_checkpoints_and_stray_folders_are_refused(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / rundir.LEGACY_CHECKPOINT).write_bytes(b"not loaded")
    with pytest.raises(AftpipeError, match="checkpoint.pt written by an older aftpipe.*never loads.*overwrite=True"):
        with rundir.writing(old, resume=True, overwrite=False):
            pass
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("mine")
    with pytest.raises(AftpipeError, match="holds no finished run.*overwrite=True"):
        with rundir.writing(tmp_path / "stray", False, False):
            pass


def test_resume_refuses_changed_settings_but_allows_extending(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / rundir.CONFIG).write_text("lr: 0.001\nsteps: 100\nthreads: 2\n")
    rundir.save_checkpoint(run, {})
    rundir.check_resumable(run, {"lr": 0.001, "steps": 300, "threads": 1})  # longer, other threads: fine
    with pytest.raises(AftpipeError, match=r"started with lr=0.001, now 0.01"):
        rundir.check_resumable(run, {"lr": 0.01, "steps": 100, "threads": 2})


def test_checkpoints_round_trip_every_kind_of_state_exactly(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"student": model.state_dict(), "opt": opt.state_dict(), "rng": {"torch": torch.get_rng_state(),
             "numpy": np.random.get_state()}, "history": [{"loss": 0.5, "holdout": math.nan}], "best": None,
             "shape": (2, 3), "$odd": 1, 7: "int key"}
    rundir.save_checkpoint(tmp_path, state)
    back = rundir.load_checkpoint(tmp_path)
    assert back["opt"]["state"].keys() == opt.state_dict()["state"].keys()  # int keys stay ints
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999) and back["shape"] == (2, 3)
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    np.testing.assert_array_equal(back["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert back["rng"]["numpy"][0] == "MT19937" and back["$odd"] == 1 and back[7] == "int key"
    assert math.isnan(back["history"][0]["holdout"]) and back["best"] is None
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(back["opt"])  # what the trainer does with it


def test_a_damaged_checkpoint_is_one_line(tmp_path):
    rundir.save_checkpoint(tmp_path, {"w": torch.ones(100)})
    path = tmp_path / rundir.CHECKPOINT
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(AftpipeError, match="checkpoint .* is damaged.*overwrite=True") as e:
        rundir.load_checkpoint(tmp_path)
    assert "\n" not in str(e.value)


def test_a_publish_that_fails_keeps_the_checkpoint_to_resume_from(tmp_path, monkeypatch):
    out = tmp_path / "r"
    real_rename = rundir.os.rename

    def refuse(src, dst):
        if str(dst) == str(out):
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    with pytest.raises(AftpipeError, match="cannot write the run directory"), rundir.writing(out, resume=False, overwrite=False) as work:
        rundir.save_checkpoint(work, {"step": 9})
        monkeypatch.setattr(rundir.os, "rename", refuse)
        rundir.finish(work, result(1.0))
    monkeypatch.undo()
    assert not out.exists() and rundir.load_checkpoint(rundir.work_dir(out)) == {"step": 9}
    with rundir.writing(out, resume=True, overwrite=False) as work:  # --resume continues from it
        assert rundir.load_checkpoint(work) == {"step": 9}
        rundir.finish(work, result(1.0))
    assert rundir.is_finished(out) and not (out / rundir.CHECKPOINT).exists()


def test_a_failed_publish_over_an_old_run_puts_the_old_run_back(tmp_path, monkeypatch):
    out = tmp_path / "r"
    with rundir.writing(out, False, False) as work:
        rundir.finish(work, result(0.5))
    real_rename = rundir.os.rename
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    with pytest.raises(AftpipeError), rundir.writing(out, resume=False, overwrite=True) as work:
        monkeypatch.setattr(rundir.os, "rename", second_fails)
        rundir.finish(work, result(0.9))
    assert rundir.read_result(out).score == 0.5


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_an_out_that_is_a_broken_link_is_refused_before_anything_is_written(tmp_path, link):
    out = tmp_path / "runs" / "r"
    out.parent.mkdir()
    out.symlink_to(tmp_path / "nowhere" / "x" if link == "dangling" else out)
    with pytest.raises(AftpipeError, match="is a symbolic link to a missing path"), rundir.writing(out, False, False):
        pass
    assert sorted(p.name for p in out.parent.iterdir()) == ["r"]


def test_an_out_link_to_a_folder_is_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with rundir.writing(tmp_path / "link", False, False) as work:
        assert work == tmp_path / "real.partial"
        rundir.finish(work, result(1.0))
    assert rundir.is_finished(tmp_path / "link") and (tmp_path / "link").is_symlink()


def test_an_out_inside_a_store_or_another_run_is_refused(tmp_path):
    store = tmp_path / "cache" / "x" / "minilm"
    store.mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    with pytest.raises(AftpipeError, match="is inside the feature store .*/minilm"), rundir.writing(store / "myrun", False, False):
        pass
    with rundir.writing(tmp_path / "run", False, False) as work:
        rundir.write_config(work, "lr: 0.1\n")
        rundir.finish(work, result(1.0))
    for inner in (tmp_path / "run" / "inner", tmp_path / "run" / "a" / "b", rundir.work_dir(tmp_path / "r2") / "x"):
        if inner.parent.name.endswith(rundir.PARTIAL):
            inner.parent.mkdir()
            (inner.parent / rundir.CONFIG).write_text("lr: 0.1\n")
        with pytest.raises(AftpipeError, match="is inside the run folder"), rundir.writing(inner, False, False):
            pass
    assert not (tmp_path / "run" / "a").exists() and not (store / "myrun").exists()


def test_overwrite_replaces_only_a_run_folder_or_an_empty_one(tmp_path):
    docs = tmp_path / "Documents"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(AftpipeError, match="is not an aftpipe run folder"), rundir.writing(docs, resume=False, overwrite=overwrite):
            pass
    (tmp_path / "file").write_text("mine")
    with pytest.raises(AftpipeError, match="is not an aftpipe run folder"), rundir.writing(tmp_path / "file", resume=False, overwrite=True):
        pass
    assert (docs / "thesis.tex").read_text() == "years of work" and (tmp_path / "file").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    with rundir.writing(tmp_path / "empty", resume=False, overwrite=True) as work:
        rundir.finish(work, result(1.0))
    assert rundir.is_finished(tmp_path / "empty")
