"""Progress displays: plain lines without a terminal, a live bar torn down cleanly, the API's defaults."""

import io

import pytest

from aftpipe.progress import LogProgress, RichProgress, SilentProgress, default_progress, make_progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_progress_prints_every_n_seconds_and_every_evaluation_with_rate_and_eta():
    out, clock = io.StringIO(), Clock()
    p = LogProgress(every_s=10, unit="step", stream=out, clock=clock)
    p.start("aft · textcnn", total=100, done=0)
    for step in range(1, 41):
        clock.t = step * 0.5  # 2 steps/s
        p.advance(1, loss="0.500", **({"holdout": "0.700"} if step == 5 else {}))
    p.finish()
    lines = out.getvalue().splitlines()
    # step 5 is an evaluation (t=2.5 s), 10 s later comes step 25, and the end adds a last line
    assert [ln.split(": ")[1].split()[0] for ln in lines] == ["5/100", "25/100", "40/100"]
    assert lines[0].startswith("aft · textcnn: 5/100 (5%)  2.0 step/s  elapsed 0:02  ETA 0:48  loss 0.500  holdout 0.700")
    assert "ETA 0:38" in lines[1] and "ETA 0:30" in lines[2]  # 75 and 60 steps left at 2 steps/s


def test_log_progress_resumed_task_counts_its_rate_from_where_it_started():
    out, clock = io.StringIO(), Clock()
    p = LogProgress(every_s=1, unit="ex", stream=out, clock=clock)
    p.start("minilm · train", total=1000, done=600)
    clock.t = 2.0
    p.advance(100)
    assert out.getvalue().strip() == "minilm · train: 700/1,000 (70%)  50.0 ex/s  elapsed 0:02  ETA 0:06"


def test_quiet_log_progress_keeps_log_lines_only():
    out, clock = io.StringIO(), Clock()
    p = LogProgress(every_s=0, stream=out, clock=clock, quiet=True)
    p.log("student textcnn: 1 parameters")
    p.start("x", total=2, done=0)
    clock.t = 1
    p.advance(2, holdout="0.5")
    p.finish()
    assert out.getvalue() == "student textcnn: 1 parameters\n"


def test_without_a_terminal_the_cli_display_is_plain_lines(capsys):
    assert isinstance(make_progress(unit="step"), LogProgress)  # pytest captures stderr: not a terminal


def test_rich_bar_restores_the_cursor_when_a_run_is_interrupted():
    from rich.console import Console

    p = RichProgress(unit="step")
    buf = io.StringIO()
    p.console = Console(file=buf, force_terminal=True, width=80)
    with pytest.raises(KeyboardInterrupt), p:
        p.start("aft · textcnn", total=10, done=0)
        p.advance(3, loss="0.1")
        raise KeyboardInterrupt
    text = buf.getvalue()
    assert "\x1b[?25l" in text  # the live bar hid the cursor ...
    assert text.rindex("\x1b[?25h") > text.rindex("\x1b[?25l")  # ... and showing it again came last
    assert p._bar is None


def test_api_default_is_silent_in_scripts_and_a_live_display_in_notebooks(monkeypatch):
    assert isinstance(default_progress(None), SilentProgress)
    mine = LogProgress()
    assert default_progress(mine) is mine
    monkeypatch.setattr("rich.console._is_jupyter", lambda: True)  # what a Jupyter kernel looks like to rich
    assert isinstance(default_progress(None, "step"), RichProgress)


def test_an_evaluation_at_the_last_step_is_not_printed_twice_and_units_can_change():
    from aftpipe.progress import counting

    out, clock = io.StringIO(), Clock()
    p = LogProgress(every_s=100, unit="step", stream=out, clock=clock)
    with counting(p, "ex"):
        p.start("tfidf · train", total=4, done=0)
        clock.t = 1
        p.advance(4)
        p.finish()
    p.start("none · textcnn", total=2, done=0)
    clock.t = 2
    p.advance(2, holdout="0.5")
    p.finish()
    assert out.getvalue().splitlines() == [
        "tfidf · train: 4/4 (100%)  4.0 ex/s  elapsed 0:01  ETA 0:00",
        "none · textcnn: 2/2 (100%)  2.0 step/s  elapsed 0:01  ETA 0:00  holdout 0.5"]
