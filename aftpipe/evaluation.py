"""Score a finished run again from what its directory holds: the check that a saved model is the one
that was measured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from aftpipe import rundir
from aftpipe.config import TrainConfig, load_config
from aftpipe.data import load_dataset
from aftpipe.errors import AftpipeError, option_hint
from aftpipe.features import open_split_features, test_rows
from aftpipe.metrics import score
from aftpipe.training import predict


def evaluate(run_dir: str | Path) -> dict[str, float]:
    """Reload a finished run's student (or probe head) and score it on its test split again.

    Everything is read from files a user may have damaged or handed over, so each is checked and a problem
    is a one-line error naming the file; weights are read with safetensors (never unpickled)."""
    from aftpipe.model import check_model_files, read_model_spec
    from aftpipe.probe import load_head, predict_head
    from aftpipe.students import rebuild_student

    run = Path(run_dir)
    result = rundir.read_result(run)
    cfg = load_config(TrainConfig, run / rundir.CONFIG)
    dataset = load_dataset(cfg.dataset, cfg.data_dir, cfg.dataset_options)
    test = dataset.split(result.test_split)
    if result.is_probe:
        feats = open_split_features(cfg.features, dataset, test.name)
        rows = test_rows(cfg, dataset, test, feats)
        with _reading(run, "probe head"):
            check_model_files(run, read_model_spec(run))  # the files model.json binds, as load_model checks them
            head = load_head(run)
        return score(predict_head(head, feats, rows), test.labels[rows], dataset.metric)
    from safetensors.torch import load_file

    architecture = rundir.read_json(run / "student.json", "the student spec")
    with _reading(run, "student"):
        check_model_files(run, read_model_spec(run))
        student = rebuild_student(architecture)
        student.load_state_dict(load_file(str(run / "student.safetensors")))
    rows = test_rows(cfg, dataset, test)
    pred = predict(student, student.encode(test.inputs), rows, torch.device("cpu"))
    return score(pred, test.labels[rows], dataset.metric)


@contextmanager
def _reading(run: Path, what: str) -> Iterator[None]:
    """Turn a damaged or missing weights/spec file into a one-line error naming the run."""
    from safetensors import SafetensorError

    try:
        yield
    except (AftpipeError, SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise AftpipeError(f"the {what} saved in {run} cannot be loaded ({first}); train the run again with "
                           f"{option_hint('overwrite')}") from None


def check_run(run_dir: str | Path) -> dict[str, Any]:
    """`evaluate` next to the scores metrics.json recorded: {"test", "recorded", "match"}."""
    got = evaluate(run_dir)
    saved = rundir.read_result(run_dir).test
    match = all(isinstance(saved.get(k), (int, float)) and abs(got[k] - saved[k]) < 1e-9 for k in got)
    return {"test": got, "recorded": saved, "match": match}


__all__ = ["check_run", "evaluate"]
