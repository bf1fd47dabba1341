"""Reports: the pure functions over run records, on synthetic records (nothing is trained)."""

import csv
import math

import numpy as np
import pytest

from aftpipe.report import (RESULT_COLUMNS, RunRecord, csv_rows, csv_text, markdown_report, mean_std, plot_png,
                            record_of, summarize)
from aftpipe.rundir import RunResult


def rec(method, seed, test, sources="minilm", student="textcnn", beta=0.1, **kw):
    return RunRecord(method=method, sources=sources, student=student, beta=beta, lr=1e-3, seed=seed,
                     metric="accuracy", test=test, holdout=test - 0.01, params=1000, ms_per_step=30.0 + seed,
                     wall_s=10.0, steps=100, **kw)


def synthetic():
    return ([rec("none", s, t, beta=0.0) for s, t in enumerate((0.80, 0.82, 0.84))]
            + [rec("aft", s, t, sigma={"minilm": 0.4 + s / 10}) for s, t in enumerate((0.85, 0.85, 0.88))]
            + [rec("linear_probe", s, 0.90, student="head", beta=0.0, is_probe=True) for s in range(3)])


def test_mean_std_is_the_sample_std():
    m, s = mean_std([0.80, 0.82, 0.84])
    assert m == pytest.approx(0.82) and s == pytest.approx(np.std([0.80, 0.82, 0.84], ddof=1))
    assert mean_std([0.5]) == (0.5, 0.0) and all(math.isnan(v) for v in mean_std([]))


def test_summaries_csv_and_markdown(tmp_path):
    recs = synthetic()
    summ = summarize(recs)
    assert [(s.method, s.n) for s in summ] == [("none", 3), ("aft", 3), ("linear_probe", 3)]
    assert summ[1].mean == pytest.approx(0.86) and summ[1].sigma["minilm"] == pytest.approx(0.5)
    assert summ[0].ms_per_step == pytest.approx(31.0)
    rows = csv_rows(recs)
    assert list(rows[0]) == RESULT_COLUMNS and len(rows) == 9
    parsed = list(csv.DictReader(csv_text(recs).splitlines()))
    assert parsed[3]["method"] == "aft" and float(parsed[3]["test"]) == 0.85 and parsed[3]["sigma"] == "minilm=0.4000"
    assert parsed[6]["ms_per_step"] == "30"
    md = markdown_report(recs, [rec("aft", 0, 0.85), rec("aft", 0, 0.83, beta=1.0)], title="T")
    # none 0.82, probe 0.90: aft's 0.86 closes half the gap
    assert "| aft | minilm | textcnn | 0.8600 ± 0.0173 | 50% | 3 | 0.1 | 0.001 | 1,000 | 31.0 | 10.0 | minilm 0.500 |" in md
    assert "| none | minilm | textcnn | 0.8200 ± 0.0200 | – | 3 |" in md
    assert "| linear_probe | minilm | head | 0.9000 ± 0.0000 | – | 3 | – | – |" in md
    tuning = md.split("## Tuning")[1]
    assert "| aft | minilm | textcnn | 0.1 | 0.001 | 0.8400 | 0.8500 | ✓ |" in tuning
    assert "| aft | minilm | textcnn | 1 | 0.001 | 0.8200 | 0.8300 |  |" in tuning


def test_gap_closed_uses_the_probe_of_the_same_sources():
    from aftpipe.report import gap_closed

    recs = synthetic() + [rec("aft", s, 0.88, sources="both") for s in range(3)] + [
        rec("linear_probe", s, 0.98, sources="both", student="head", beta=0.0, is_probe=True) for s in range(3)]
    summ = summarize(recs)
    by = {(s.method, s.sources): s for s in summ}
    assert gap_closed(by["aft", "minilm"], summ) == pytest.approx(0.5)
    assert gap_closed(by["aft", "both"], summ) == pytest.approx(0.06 / 0.16)  # against the `both` probe
    assert math.isnan(gap_closed(by["none", "minilm"], summ)) and math.isnan(gap_closed(by["linear_probe", "both"], summ))
    assert math.isnan(gap_closed(by["aft", "minilm"], [s for s in summ if s.method != "none"]))


def test_plot_is_a_png_and_deterministic():
    a, b = plot_png(synthetic(), title="t"), plot_png(synthetic(), title="t")
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b


def test_a_record_reads_sigma_per_store_from_the_result():
    metrics = {"test_split": "test", "metric": "mcc", "test": {"accuracy": 0.7, "mcc": 0.3}, "holdout": {"accuracy": 0.6, "mcc": 0.2},
               "params": 10, "foundation_params": 5, "ms_per_step": 2.0, "wall_s": 1.0, "steps": 4,
               "method": {"name": "aft", "sources": [{"sigma_mean": 0.5, "store": "cache/x/minilm"},
                                                     {"sigma_mean": 0.25, "store": "cache/x/tfidf.h5"}]}}
    r = record_of(RunResult.from_json(metrics), method="aft", sources="both", student="textcnn", beta=0.1, lr=1e-3, seed=1)
    assert (r.test, r.holdout, r.sigma) == (0.3, 0.2, {"minilm": 0.5, "tfidf": 0.25})




def test_with_several_students_the_gap_is_also_measured_from_the_first_students_none():
    from aftpipe.report import gap_closed, results_table

    recs = synthetic() + [rec("none", s, 0.86, student="cnn@init") for s in range(3)] + [
        rec("tokt", s, 0.88, student="cnn@init") for s in range(3)]
    summ = summarize(recs)
    by = {(s.method, s.student): s for s in summ}
    # the init student's own none closes 50% of the textcnn none → probe gap; TOKT on it 75%
    assert gap_closed(by["none", "cnn@init"], summ, baseline="textcnn") == pytest.approx(0.5)
    assert gap_closed(by["tokt", "cnn@init"], summ, baseline="textcnn") == pytest.approx(0.75)
    assert gap_closed(by["tokt", "cnn@init"], summ) == pytest.approx(0.5)  # from its own none (0.86 → 0.90)
    table = results_table(recs)
    assert "| gap closed | gap vs textcnn none |" in table
    assert "| tokt | minilm | cnn@init | 0.8800 ± 0.0000 | 50% | 75% | 3 |" in table
    assert "| gap vs" not in results_table(synthetic())  # one student: one gap column
