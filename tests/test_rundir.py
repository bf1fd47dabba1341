import pytest

from aftpipe import rundir
from aftpipe.errors import AftpipeError


def test_config_diff_names_every_differing_key_outside_the_ignored_ones():
    old = {"lr": 0.001, "steps": 100, "threads": 2, "gone": 1}
    new = {"lr": 0.003, "steps": 200, "threads": 4, "added": 2}
    assert rundir.config_diff(old, new, ignore={"threads"}) == [
        ("added", None, 2), ("gone", 1, None), ("lr", 0.001, 0.003), ("steps", 100, 200)]
    assert rundir.config_diff(old, dict(old), ignore=()) == []


def test_prepare_refuses_to_touch_finished_or_unfinished_runs(tmp_path):
    run = tmp_path / "r"
    assert rundir.prepare(run, resume=False, overwrite=False) == run and run.is_dir()
    (run / rundir.CHECKPOINT).write_bytes(b"x")
    with pytest.raises(AftpipeError, match="unfinished run; pass resume=True"):
        rundir.prepare(run, resume=False, overwrite=False)
    rundir.finish(run, {"test": {}})
    assert rundir.is_finished(run) and not (run / rundir.CHECKPOINT).exists()
    with pytest.raises(AftpipeError, match="already holds a finished run"):
        rundir.prepare(run, resume=False, overwrite=False)
    assert rundir.prepare(run, resume=True, overwrite=False) is None  # nothing to do
    assert rundir.prepare(run, resume=False, overwrite=True) == run and not rundir.is_finished(run)


def test_resume_refuses_changed_settings_but_allows_extending(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / rundir.CONFIG).write_text("lr: 0.001\nsteps: 100\nthreads: 2\n")
    (run / rundir.CHECKPOINT).write_bytes(b"x")
    rundir.check_resumable(run, {"lr": 0.001, "steps": 300, "threads": 1})  # longer, other threads: fine
    with pytest.raises(AftpipeError, match=r"started with lr=0.001, now 0.01"):
        rundir.check_resumable(run, {"lr": 0.01, "steps": 100, "threads": 2})
