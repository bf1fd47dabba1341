"""How long a run trains: the user's --steps or --epochs, else 5 epochs and at least MIN_STEPS steps, and one
warning line when --epochs make a run too short to converge."""

from __future__ import annotations

import json
import math

import pytest

from aftpipe.config import TrainConfig
from aftpipe.training import DEFAULT_EPOCHS, MIN_STEPS, schedule, short_run_warning


def cfg(**kw) -> TrainConfig:
    return TrainConfig(dataset="sst2", method="none", out="unused", **kw)


def test_small_data_gets_at_least_min_steps_and_large_data_its_five_epochs():
    small = schedule(cfg(), 216)  # 240 rows less the 10% hold-out: 2 steps an epoch
    assert small.steps_per_epoch == 2 and small.total == MIN_STEPS and not small.short
    sst2 = schedule(cfg(), 60_614)  # SST-2's 67,349 train rows less the hold-out
    assert sst2.total == DEFAULT_EPOCHS * math.ceil(60_614 / 128) == 2_370  # the length it always had


def test_a_length_the_user_fixed_is_kept_and_a_short_one_named():
    five = schedule(cfg(epochs=5), 216)
    assert five.total == 10 and five.short
    line = short_run_warning(cfg(epochs=5), five)
    assert line.startswith("warning: epochs=5 is 10 optimizer steps (2 per epoch of 128 rows)")
    assert f"about {MIN_STEPS}" in line and f"steps={MIN_STEPS}" in line
    assert schedule(cfg(steps=10), 216).total == 10 and short_run_warning(cfg(steps=10), schedule(cfg(steps=10), 216)) is None
    assert not schedule(cfg(epochs=5), 60_614).short


@pytest.fixture
def small_tsv(tmp_path):
    rows = [f"{'good great' if i % 2 else 'bad awful'} film {i}\t{i % 2}" for i in range(120)]
    path = tmp_path / "small.tsv"
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    return path


def test_the_cli_trains_small_data_to_min_steps_and_warns_when_epochs_cut_it_short(small_tsv, tmp_path, cli):
    base = ["train", "--dataset", f"tsv:{small_tsv}", "--method", "none", "--student", "bow-mlp", "--vocab-size", "50",
            "--embed-dim", "8", "--width", "8", "--threads", "1", "--quiet"]
    code, _, err = cli([*base, "--out", str(tmp_path / "default")])
    assert code == 0 and "warning" not in err, err
    assert json.loads((tmp_path / "default" / "metrics.json").read_text())["steps"] == MIN_STEPS
    code, _, err = cli([*base, "--epochs", "2", "--out", str(tmp_path / "short")])
    assert code == 0, err
    [line] = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert line.startswith("warning: --epochs 2 is 2 optimizer steps (1 per epoch of 128 rows)")
    assert f"pass --steps {MIN_STEPS}" in line
    assert json.loads((tmp_path / "short" / "metrics.json").read_text())["steps"] == 2
