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


def test_without_a_terminal_the_cli_display_is_plain_lines_and_on_one_a_live_bar():
    from rich.console import Console

    buf = io.StringIO()
    plain = make_progress(unit="step", every_s=0, console=Console(file=buf))  # a file: not a terminal
    assert isinstance(plain, LogProgress)
    plain.log("written to the console's file")
    assert buf.getvalue() == "written to the console's file\n"
    assert isinstance(make_progress(unit="step", console=Console(file=io.StringIO(), force_terminal=True)), RichProgress)


def _drawn(width: int, fields: dict[str, str], total: int = 300, done: int = 53) -> str:
    """The live bar's line on a terminal `width` columns wide, `done` steps in at 4 steps/s (a fake clock)."""
    from rich.console import Console

    clock = Clock()
    p = RichProgress(unit="step", console=Console(file=io.StringIO(), width=width, force_terminal=True), clock=clock)
    p.start("aft · textcnn", total=total, done=0)
    for i in range(done):
        clock.t = (i + 1) / 4
        p.advance(1, **fields)
    screen = Console(file=io.StringIO(), width=width, color_system=None)
    screen.print(p.line(p._bar.tasks[0], width))
    p.finish()
    return screen.file.getvalue()


TRAINING = {"loss": "0.512", "ce": "0.489", "reg": "0.023", "holdout": "0.781"}


@pytest.mark.parametrize("width", [200, 160, 120, 100, 80, 72, 60])
def test_the_live_bar_fits_any_width_and_keeps_the_count_and_eta(width):
    text = _drawn(width, TRAINING)
    assert text.count("\n") == 1 and len(text.rstrip("\n")) <= width  # one line, never wrapped or cut
    assert "53/300" in text and "ETA 1:02" in text  # 247 steps left at 4 steps/s
    assert "aft · textcnn" in text


def test_the_live_bar_drops_fields_least_needed_first():
    wide, at_100, at_80, at_60 = (_drawn(w, TRAINING) for w in (200, 100, 80, 60))
    assert "elapsed 0:13" in wide and "holdout 0.781" in wide and "4 step/s" in wide and "━" in wide
    assert "elapsed" not in at_100 and "loss 0.512  ce 0.489" in at_100  # the elapsed time goes first
    assert "holdout" not in at_80 and "loss 0.512" in at_80 and "━" in at_80  # then training fields, last first
    assert "loss" not in at_60 and "━" in at_60


def test_fit_fields_shortens_then_drops_the_label_before_the_count_and_eta():
    from aftpipe.progress import fit_fields

    fields = [("label", "a-rather-long-pipeline-run-name"), ("bar", ""), ("count", "5/10"), ("rate", "1 step/s"),
              ("eta", "ETA 0:05")]
    kept, bar = fit_fields(fields, 30)
    assert bar == 0 and [n for n, _ in kept] == ["label", "count", "eta"]
    assert kept[0][1].endswith("…") and len("  ".join(t for _, t in kept)) == 30
    kept, bar = fit_fields(fields, 14)
    assert (kept, bar) == ([("count", "5/10"), ("eta", "ETA 0:05")], 0)
    kept, bar = fit_fields(fields, 200)
    assert kept == fields and bar == 40  # the bar's widest


def test_an_eta_given_by_the_caller_replaces_the_rate_estimate_and_counts_down():
    out, clock = io.StringIO(), Clock()
    p = LogProgress(every_s=0, unit="run", stream=out, clock=clock)
    p.start("demo: runs", total=10, done=0)
    clock.t = 1.0
    p.advance(5, eta_s=100.0)  # five runs read from disk in a second: the rate would say 1 s left
    clock.t = 31.0
    p.advance(0)
    assert [ln.split("ETA ")[1] for ln in out.getvalue().splitlines()] == ["1:40", "1:10"]


def test_rich_bar_restores_the_cursor_when_a_run_is_interrupted():
    from rich.console import Console

    buf = io.StringIO()
    p = RichProgress(unit="step", console=Console(file=buf, force_terminal=True, width=80))
    with pytest.raises(KeyboardInterrupt), p:
        p.start("aft · textcnn", total=10, done=0)
        p.advance(3, loss="0.1")
        raise KeyboardInterrupt
    text = buf.getvalue()
    assert "\x1b[?25l" in text  # the live bar hid the cursor ...
    assert text.rindex("\x1b[?25h") > text.rindex("\x1b[?25l")  # ... and showing it again came last
    assert p._bar is None


def test_api_default_is_silent_in_scripts_and_a_live_display_in_notebooks(monkeypatch, capfd):
    silent = default_progress(None)
    assert isinstance(silent, SilentProgress)
    silent.log("not shown")
    silent.start("x", total=2, done=0)
    silent.advance(2)
    silent.finish()
    assert capfd.readouterr() == ("", "")  # the process's own streams, whether pytest captures them or not
    mine = LogProgress(stream=io.StringIO())
    assert default_progress(mine) is mine
    monkeypatch.setattr("rich.console._is_jupyter", lambda: True)  # what a Jupyter kernel looks like to rich
    live = default_progress(None, "step")
    assert isinstance(live, RichProgress) and live.console.stderr


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
