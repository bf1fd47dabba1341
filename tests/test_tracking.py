"""A run's live log: metrics.jsonl (resume-safe), TensorBoard and W&B (offline) sinks."""


import pytest

from aftpipe.errors import AftpipeError
from aftpipe.tracking import RunLog, check_trackers, read_log


def rows(*steps):
    return [{"step": s, "loss": 1.0 / s, "ce": 0.5, "reg": 0.1, "holdout_accuracy": 0.5 + s / 100} for s in steps]


def test_jsonl_grows_row_by_row_and_a_resume_drops_rows_after_the_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    for r in rows(10, 20):
        log.log(r)
        assert read_log(tmp_path)[-1] == r  # on disk as soon as it is logged, not at close
    log.log(rows(30)[0])
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 40, "lo')  # a kill mid-line
    RunLog(tmp_path, resume_step=20).close()  # the checkpoint was at step 20
    assert [r["step"] for r in read_log(tmp_path)] == [10, 20]
    RunLog(tmp_path).close()  # a fresh run starts a fresh log
    assert read_log(tmp_path) == []


def test_tensorboard_gets_every_number_under_its_group(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLog(tmp_path, ("tensorboard",)) as log:
        for r in rows(10, 20):
            log.log(r)
        log.log({"step": 20, "test_accuracy": 0.75})
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/ce", "train/reg", "holdout/accuracy", "test/accuracy"} <= tags
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("holdout/accuracy")] == [(10, 0.6), (20, 0.7)]


def test_wandb_offline_writes_a_local_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "run").mkdir()
    with RunLog(tmp_path / "run", ("wandb",), config={"method": "aft"}) as log:
        for r in rows(10, 20):
            log.log(r)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_tracker_that_is_not_installed_is_refused_before_anything_runs(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    needs = r"report_to=\"wandb\" needs the `wandb` package; `pip install 'aftpipe\[wandb\]'`"
    with pytest.raises(AftpipeError, match=needs):
        check_trackers(("tensorboard", "wandb"))
