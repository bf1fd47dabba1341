"""Pipelines: strict YAML checks, the plan, one tiny sweep end to end."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from aftpipe.errors import AftpipeError
from aftpipe.pipeline import load_pipeline, plan, plan_pipeline, run_name, validate
from aftpipe.sweep import run_pipeline
from aftpipe.report import RESULT_COLUMNS
from aftpipe.rundir import RunResult

REPO = Path(__file__).resolve().parents[1]

BASE = """\
dataset: sst2
labels: 2000
sources:
  minilm: [minilm]
  minilm+tfidf: [minilm, tfidf]
students: [textcnn]
methods:
  - name: none
  - name: aft
    sources: [minilm, minilm+tfidf]
    beta: [0.01, 0.1, 1.0]
    options: {state_lr: 1e-2}
  - name: linear_probe
seeds: [0, 1, 2]
train: {epochs: 2, student_options: {width: 32}}
"""


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(tmp_path, text) -> str:
    with pytest.raises(AftpipeError) as e:
        load_pipeline(write(tmp_path, text))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- loading and validation --------------------------------------------------------------------------------
def test_a_good_pipeline_loads_with_its_defaults(tmp_path):
    cfg = load_pipeline(write(tmp_path, BASE, "sst2-small.yaml"))
    assert cfg.name == "sst2-small" and cfg.labels == 2000 and cfg.seeds == (0, 1, 2)
    assert cfg.methods[1].beta == (0.01, 0.1, 1.0) and cfg.methods[1].options == {"state_lr": 0.01}
    assert cfg.train["student_options"].width == 32
    groups = plan(cfg)
    assert [(g.method, g.sources, g.student) for g in groups] == [
        ("none", "minilm", "textcnn"), ("aft", "minilm", "textcnn"), ("aft", "minilm+tfidf", "textcnn"),
        ("linear_probe", "minilm", "head")]
    assert run_name("aft", "minilm+tfidf", "hf-config:/x/c.json", 0.1, 1e-3, 2) == \
        "aft-minilm+tfidf-hf-config__x_c.json-b0.1-lr0.001-s2"


def test_a_control_is_its_own_group_with_its_own_runs(tmp_path, data_dir):
    path = write(tmp_path, BASE.replace("  - name: linear_probe\n", "  - name: aft\n    control: shuffle\n"
                                                                   "  - name: linear_probe\n"))
    p = plan_pipeline(path, cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    g = p.groups[3]
    assert g.method == "aft+shuffle" and g.spec.name == "aft" and g.label == "aft+shuffle · minilm · textcnn"
    tc = p.train_config(g, 1.0, 1e-3, 0)
    assert tc.method == "aft" and tc.phi_control == "shuffle" and "aft+shuffle-minilm-textcnn" in tc.out
    assert p.train_config(p.groups[1], 1.0, 1e-3, 0).phi_control == "none"


def test_a_student_may_bring_its_own_lr_grid_and_settings(tmp_path, data_dir):
    text = BASE.replace("students: [textcnn]", "students:\n  - textcnn\n  - {name: bow-mlp, lr: [0.01, 0.03], "
                        "train: {weight_decay: 0.0}}")
    p = plan_pipeline(write(tmp_path, text), cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    by = {(g.method, g.student): g for g in p.groups}
    assert by["none", "textcnn"].grid == ((0.0, 0.001),) and by["none", "bow-mlp"].grid == ((0.0, 0.01), (0.0, 0.03))
    assert len(by["aft", "bow-mlp"].grid) == 3 * 2  # the method's β grid × the student's lr grid
    tc = p.train_config(by["aft", "bow-mlp"], 0.1, 0.03, 0)
    assert (tc.student, tc.lr, tc.weight_decay, tc.epochs) == ("bow-mlp", 0.03, 0.0, 2)
    assert p.train_config(by["aft", "textcnn"], 0.1, 1e-3, 0).weight_decay == 0.01
    with pytest.raises(AftpipeError, match=r"students\[1\]\.train\.lr: set by the pipeline"):
        load_pipeline(write(tmp_path, text.replace("weight_decay: 0.0", "lr: 0.1")))
    # a method may run on some students only; the same method twice on one student is refused
    only = text.replace("  - name: linear_probe\n", "  - name: tokt\n    students: bow-mlp\n  - name: linear_probe\n")
    assert [g.student for g in plan(load_pipeline(write(tmp_path, only))) if g.method == "tokt"] == ["bow-mlp"]
    with pytest.raises(AftpipeError, match=r"methods\[2\]\.students: no student `cnn`"):
        load_pipeline(write(tmp_path, only.replace("students: bow-mlp", "students: cnn")))
    twice = only.replace("  - name: linear_probe\n", "  - name: tokt\n    students: [textcnn, bow-mlp]\n"
                                                      "  - name: linear_probe\n")
    with pytest.raises(AftpipeError, match=r"methods\[3\]: repeats methods\[2\] \(tokt on minilm with bow-mlp\)"):
        load_pipeline(write(tmp_path, twice))


def test_a_method_may_override_the_shared_training_settings(tmp_path, data_dir):
    path = write(tmp_path, BASE.replace("{state_lr: 1e-2}", "{state_lr: 1e-2}\n    train: {steps: 900}"))
    p = plan_pipeline(path, cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    none, aft = p.groups[0], p.groups[1]
    assert aft.spec.train == {"steps": 900} and none.spec.train == {}
    a = p.train_config(aft, 0.1, 1e-3, 0)
    n = p.train_config(none, 0.0, 1e-3, 0)
    assert (a.steps, a.epochs, a.student_options.width) == (900, 2, 32)  # the rest is still shared
    assert (n.steps, n.epochs) == (None, 2)
    assert a.method_options.beta == 0.1 and a.method_options.state_lr == 0.01 and n.method == "none"
    assert a.out == str(tmp_path / "runs" / "p" / "aft-minilm-textcnn-b0.1-lr0.001-s0")
    assert a.features == (str(tmp_path / "cache" / "sst2" / "minilm"),)
    # the plan's counts use the same row plan as training: 2,000 labels → 1,800 train rows, 15 steps/epoch
    assert (len(p.rows.train), len(p.rows.holdout)) == (1800, 200) and p.steps(none) == 30 and p.steps(aft) == 900


@pytest.mark.parametrize("edit,needles", [
    (("seeds: [0, 1, 2]", "seeds: [0, 1, 2]\nepochs: 3"), ["p.yaml: epochs: unknown key"]),
    (("train: {epochs: 2,", "train: {epoch: 2,"), ["train.epoch: unknown key", "did you mean `epochs`"]),
    (("{width: 32}", "{widht: 32}"), ["train.student_options.widht: unknown key"]),
    (("beta: [0.01, 0.1, 1.0]", "beta: high"), ["methods[1].beta: expected a list of numbers, got 'high'"]),
    (("beta: [0.01, 0.1, 1.0]", "beta: [0.1, x]"), ["methods[1].beta[1]: expected a number, got 'x'"]),
    (("beta: [0.01, 0.1, 1.0]", "beta: [0.1, -1]"), ["methods[1].beta[1]: must be ≥ 0"]),
    (("beta: [0.01, 0.1, 1.0]", "lr: [0]"), ["methods[1].lr[0]: must be > 0"]),
    (("labels: 2000", "labels: many"), ["labels: expected an integer, got 'many'"]),
    (("seeds: [0, 1, 2]", "seeds: []"), ["seeds: expected at least one seed"]),
    (("name: aft\n", "name: aftt\n"), ["methods[1].name: no method `aftt`", "aft_primal"]),
    (("students: [textcnn]", "students: [cnn]"), ["students[0]: no student `cnn`", "textcnn"]),
    (("[minilm, tfidf]", "[minilm, bert]"), ["sources.minilm+tfidf[1]: no source `bert`", "hf:"]),
    (("sources: [minilm, minilm+tfidf]", "sources: minilmx"), ["methods[1].sources: no source set `minilmx`"]),
    (("{state_lr: 1e-2}", "{state_lr: 1e-2, beta: 1}"), ["methods[1].options.beta: set by the pipeline"]),
    (("{state_lr: 1e-2}", "{temperature: 2}"), ["methods[1].options.temperature: unknown key"]),
    (("{state_lr: 1e-2}", "{tau: 0}"), ["methods[1].options.tau: must be > 0, got 0"]),
    (("train: {epochs: 2,", "train: {epochs: 2, warmup: 2,"), ["train.warmup: is a fraction of the steps"]),
    (("train: {epochs: 2,", "train: {epochs: 2, threads: -2,"), ["train.threads: must be ≥ 1, got -2"]),
    (("seeds: [0, 1, 2]", "seeds: [0, 1, 2]\nextract: {dtype: float8}"), ["extract.dtype: expected one of float16"]),
    (("seeds: [0, 1, 2]", "seeds: [0, 1, 2]\nextract: {cache_dir: x}"), ["extract.cache_dir: set by the pipeline"]),
    (("train: {epochs: 2,", "train: {seed: 3, epochs: 2,"), ["train.seed: set by the pipeline", "seeds:"]),
    (("train: {epochs: 2,", "train: {epochs: two,"), ["train.epochs: expected an integer, got 'two'"]),
    (("  - name: none\n", "  - name: none\n    beta: [1.0]\n"), ["methods[0].beta: method `none` has no"]),
    (("  - name: none\n", "  - name: none\n    control: shuffle\n"), ["methods[0].control: method `none` has no transfer"]),
    (("    options: {state_lr: 1e-2}\n", "    options: {state_lr: 1e-2}\n  - name: aft\n    control: noise\n"),
     ["methods[2].control: expected one of none, shuffle, gaussian, got 'noise'"]),
    (("  - name: linear_probe\n", "  - name: linear_probe\n    lr: [0.1]\n"), ["methods[2].lr: linear_probe"]),
    (("dataset: sst2", "dataset: sst3"), ["dataset: no dataset `sst3`"]),
    (("{state_lr: 1e-2}", "{state_lr: 1e-2}\n    train: {steps: 0}"), ["methods[1].train.steps: must be ≥ 1"]),
    (("{state_lr: 1e-2}", "{state_lr: 1e-2}\n    train: {lr: 0.1}"), ["methods[1].train.lr: set by the pipeline"]),
    (("{state_lr: 1e-2}", "{state_lr: 1e-2}\n    train: {holdout: 0.2}"), ["methods[1].train:", "top-level"]),
    (("{state_lr: 1e-2}", "{state_lr: 1e-2}\n    train: {stepz: 9}"), ["methods[1].train.stepz: unknown key"]),
    (("dataset: sst2\n", ""), ["dataset: required key missing"]),
])
def test_bad_pipelines_are_refused_with_the_key_path(tmp_path, edit, needles):
    old, new = edit
    assert old in BASE
    msg = error_of(tmp_path, BASE.replace(old, new, 1))
    assert msg.startswith(str(tmp_path / "p.yaml") + ": ")
    for n in needles:
        assert n in msg, msg


def test_fewer_than_three_seeds_load_with_a_warning(tmp_path, data_dir):
    cfg = load_pipeline(write(tmp_path, BASE.replace("seeds: [0, 1, 2]", "seeds: [0]")))
    assert cfg.seeds == (0,) and cfg.seeds_warning().startswith("n=1: no std")
    assert load_pipeline(write(tmp_path, BASE)).seeds_warning() is None
    assert "warning: n=1: no std" in validate(write(tmp_path, BASE.replace("seeds: [0, 1, 2]", "seeds: [0]")))


TWO_SETS = """\
dataset: sst2
labels: 2000
sources:
  minilm: [minilm]
  tfidf: [tfidf]
students: [textcnn]
methods:
  - name: none
  - name: aft
seeds: [0, 1, 2]
train: {epochs: 2}
"""


def test_a_source_set_no_method_reads_is_named_by_validate_and_run(tmp_path, data_dir, monkeypatch):
    import io

    from aftpipe.progress import LogProgress

    p = write(tmp_path, TWO_SETS)
    assert load_pipeline(write(tmp_path, BASE, "all-used.yaml")).unused_sources_warning() is None
    warning = load_pipeline(p).unused_sources_warning()
    assert warning.startswith("source set `tfidf` is used by no method") and "the first set, `minilm`" in warning
    dirs = {"cache_dir": tmp_path / "cache", "runs_dir": tmp_path / "runs"}
    summary = validate(p, **dirs)
    assert f"warning: {warning}" in summary.splitlines()
    [stores] = [ln for ln in summary.splitlines() if ln.startswith("stores")]
    assert "1 to extract first" in stores and "tfidf" not in stores  # what run will extract, and only that

    class Stop(Exception):
        pass

    def stop(*_args, **_kw):
        raise Stop

    monkeypatch.setattr("aftpipe.extraction.extract", stop)  # `run` stops where it would start computing
    out = io.StringIO()
    with pytest.raises(Stop):
        run_pipeline(p, **dirs, progress=LogProgress(stream=out))
    assert f"warning: {warning}" in out.getvalue().splitlines()
    assert "tfidf" not in out.getvalue().split(warning)[1]  # it is not extracted either


def test_validate_says_valid_and_what_run_would_do_not_ok(tmp_path, data_dir):
    summary = validate(write(tmp_path, BASE), cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    first, stores = summary.splitlines()[0], next(ln for ln in summary.splitlines() if ln.startswith("stores"))
    assert "OK" not in summary and first.endswith("pipeline `p` is valid; `aftpipe run` would do this:")
    assert "0 present, 2 to extract first (" in stores


def test_the_sweep_eta_comes_from_the_runs_it_trained_not_from_runs_read_from_disk(tmp_path, data_dir, monkeypatch):
    import io
    import json

    from aftpipe.progress import LogProgress
    from aftpipe.sweep import Sweep

    text = BASE.split("methods:")[0] + "methods:\n  - name: none\nseeds: [0, 1, 2, 3]\n"
    p = plan_pipeline(write(tmp_path, text), tmp_path / "cache", tmp_path / "runs")
    metrics = {"metric": "accuracy", "test": {"accuracy": 0.5}, "test_split": "dev"}
    finished = p.run_dir(p.groups[0], *p.groups[0].grid[0], 0)
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text(json.dumps(metrics))  # seed 0 finished in an earlier sweep
    clock = {"t": 0.0}
    takes = iter([10.0, 30.0, 20.0])  # what seeds 1, 2 and 3 take to train

    def fake_train(tc, progress):
        clock["t"] += next(takes)
        return RunResult.from_json(metrics)

    monkeypatch.setattr("aftpipe.sweep.train_run", fake_train)
    monkeypatch.setattr("aftpipe.model.add_seed_summary", lambda *a: None)
    out = io.StringIO()
    Sweep(p, LogProgress(stream=out), jobs=1, clock=lambda: clock["t"]).run()
    announced = [ln.split("-s")[-1] for ln in out.getvalue().splitlines() if ln.startswith("[")]
    # no estimate before a run has been timed (the reused run took no time); then the mean × the runs left
    assert announced == ["1", "2  (sweep ETA 0:20)", "3  (sweep ETA 0:20)"]  # 10 s × 2 left; 20 s × 1 left


def test_run_times_spread_the_runs_left_over_the_jobs():
    from aftpipe.sweep import RunTimes

    times = RunTimes(left=10, jobs=2)
    for _ in range(4):
        times.reused()
    assert times.eta() != times.eta()  # NaN: nothing measured yet, whatever the rate of reused runs says
    times.trained(60.0)
    times.trained(120.0)
    assert times.eta() == 90.0 * 4 / 2
    for _ in range(3):
        times.trained(90.0)
    assert times.left == 1 and times.eta() == 90.0  # one run left runs on one core however many jobs


def test_not_yaml_and_missing_files_are_one_line_errors(tmp_path):
    assert "not valid YAML" in error_of(tmp_path, "dataset: [sst2\n")
    with pytest.raises(AftpipeError, match="no pipeline file"):
        load_pipeline(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipelines_load_and_say_how_to_run_them(path):
    cfg = load_pipeline(path)
    assert cfg.name == path.stem and len(cfg.seeds) >= 3
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and f"aftpipe run pipelines/{path.name}" in first


# --- end to end --------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_pipeline(tmp_path, tiny_hf_dir, write_reviews):
    data = write_reviews(tmp_path / "data", {"train": 200, "test": 60})
    return write(tmp_path, f"""\
# aftpipe run tiny.yaml
dataset: tsv:{data}
labels: 150
extract: {{workers: 0, batch_size: 64}}
sources:
  tiny: [hf:{tiny_hf_dir}]
students: [bow-mlp]
methods:
  - name: none
  - name: aft
    beta: [0.1, 1.0]
  - name: linear_probe
seeds: [0, 1, 2]
train: {{epochs: 1, batch_size: 32, student_options: {{vocab_size: 200, embed_dim: 16, width: 16, max_length: 16}}}}
""", "tiny.yaml")


def test_run_pipeline_end_to_end_and_rerun_changes_nothing(tiny_pipeline, tmp_path):
    dirs = dict(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    summary = validate(tiny_pipeline, cache_dir=dirs["cache_dir"], runs_dir=dirs["runs_dir"])
    assert "0 present, 1 to extract" in summary and "tuning: 2 runs" in summary and "final: 9 runs" in summary
    out = run_pipeline(tiny_pipeline, **dirs)
    assert out == tmp_path / "results" / "tiny"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 9 and set(RESULT_COLUMNS) <= set(rows[0])
    assert [r["method"] for r in rows] == ["none"] * 3 + ["aft"] * 3 + ["linear_probe"] * 3
    assert [r["seed"] for r in rows] == ["0", "1", "2"] * 3
    aft = [r for r in rows if r["method"] == "aft"]
    assert len({r["beta"] for r in aft}) == 1 and aft[0]["sigma"].startswith("hf-")
    probe = rows[-1]
    assert probe["student"] == "head" and int(probe["params"]) > int(rows[0]["params"])
    tuning = list(csv.DictReader((out / "tuning.csv").open()))
    assert sorted(r["beta"] for r in tuning) == ["0.1", "1"] and {r["seed"] for r in tuning} == {"0"}
    md = (out / "results.md").read_text()
    assert "| aft | tiny | bow-mlp |" in md and "| linear_probe | tiny | head |" in md
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG"
    runs = sorted((tmp_path / "runs" / "tiny").glob("*/metrics.json"))
    assert len(runs) == 3 + 2 + 2 + 3  # the tuning run of the chosen β is the final seed-0 run
    assert (tmp_path / "runs" / "tiny" / "none-tiny-bow-mlp-b0-lr0.001-s1" / "metrics.json").exists()
    assert "0 to extract" in validate(tiny_pipeline, cache_dir=dirs["cache_dir"], runs_dir=dirs["runs_dir"])
    # every final run's model card carries its setting's mean ± std over the seeds, as results.md does
    for r in rows:
        card = (Path(r["run"]) / "README.md").read_text()
        [line] = [ln for ln in card.splitlines() if "over seeds" in ln]
        assert "(seeds 0, 1, 2, same settings)" in line and line.split("| ")[2].split(" ±")[0] in md
    cards = sorted((tmp_path / "runs" / "tiny").glob("*/README.md"))

    before = {p: p.stat().st_mtime_ns for p in runs + cards}
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    run_pipeline(tiny_pipeline, **dirs)
    assert {p: p.stat().st_mtime_ns for p in runs + cards} == before  # nothing retrained, no card rewritten
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == files  # nothing rewritten

    # a changed setting is not silently answered with the old runs
    tiny_pipeline.write_text(tiny_pipeline.read_text().replace("epochs: 1", "epochs: 2"))
    with pytest.raises(AftpipeError, match="was trained with epochs=1, the pipeline now says 2"):
        run_pipeline(tiny_pipeline, **dirs)


def test_runs_in_worker_processes_give_the_numbers_of_runs_one_by_one(tiny_pipeline, tmp_path):
    """jobs=3 (worker processes, tuning of one group overlapping other groups' runs) and jobs=1 (in this
    process, one after another) from scratch: every run's scores and loss history are the same to the bit."""
    import json

    results = {}
    for jobs in (3, 1):
        dirs = {k: tmp_path / f"{k}-{jobs}" for k in ("cache_dir", "results_dir", "runs_dir")}
        out = run_pipeline(tiny_pipeline, jobs=jobs, **dirs)
        rows = list(csv.DictReader((out / "results.csv").open())) + list(csv.DictReader((out / "tuning.csv").open()))
        runs = {}
        for m in sorted((dirs["runs_dir"] / "tiny").glob("*/metrics.json")):
            metrics = json.loads(m.read_text())
            runs[m.parent.name] = (metrics["test"], metrics["holdout"],
                                   [(h["step"], h["loss"], h.get("holdout_accuracy")) for h in metrics["history"]])
        timing = ("ms_per_step", "wall_s", "run")
        results[jobs] = ([{k: v for k, v in r.items() if k not in timing} for r in rows], runs)
        config = (dirs["runs_dir"] / "tiny" / "none-tiny-bow-mlp-b0-lr0.001-s0" / "config.yaml").read_text()
        assert "threads: 1" in config  # one thread per run, whatever the number of jobs
    assert len(results[1][1]) == 10 and results[3] == results[1]
    with pytest.raises(AftpipeError, match="jobs=0: must be at least 1"):
        run_pipeline(tiny_pipeline, jobs=0, runs_dir=tmp_path / "runs-0")


def test_a_smoke_sweep_from_a_saved_hf_dataset_logs_plainly_to_a_file(tmp_path):
    """Two seeds (allowed, with the report's warning), a `datasets` save_to_disk folder, TensorBoard asked for,
    two runs at a time, output to a file as in a batch job: each run's progress lines led by its [k/N], with
    rate and ETA, a line per finished run and the sweep's count of runs, then the table."""
    import json
    import os
    import subprocess
    import sys

    import datasets

    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    pos, neg = ["good", "great", "superb", "fine"], ["bad", "awful", "dull", "boring"]
    parts = {}
    for name, n in (("train", 200), ("validation", 60)):
        y = rng.integers(0, 2, n)
        parts[name] = datasets.Dataset.from_dict(
            {"text": [f"{' '.join(rng.choice(pos if c else neg, 3))} film {i}" for i, c in enumerate(y)], "label": y})
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "reviews"))
    pipeline = write(tmp_path, f"""\
# aftpipe run smoke.yaml
dataset: hf:{tmp_path / 'reviews'}
sources:
  tfidf: [tfidf]
extract: {{source_options: {{tfidf_dim: 16}}}}
students: [bow-mlp]
methods:
  - name: none
    lr: [0.003, 0.01]
  - name: linear_probe
seeds: [0, 1]
train: {{epochs: 2, batch_size: 32, dataset_options: {{split_map: {{train: train, validation: test}}}},
        student_options: {{vocab_size: 200, embed_dim: 16, width: 16, max_length: 16}}}}
""", "smoke.yaml")
    log = tmp_path / "run.log"
    dirs = ["--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"), "--results-dir",
            str(tmp_path / "results")]
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-m", "aftpipe.cli", "run", str(pipeline), *dirs, "--report-to",
                               "tensorboard", "--log-every", "0.5", "--jobs", "2"], stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "warning: n=2: no std" in text
    assert "[1/5] none-tfidf-bow-mlp-b0-lr0.003-s0" in text and "[5/5] linear_probe-tfidf-head" in text
    progress = [ln for ln in text.splitlines() if re.match(r"\[[124]/5\] none · bow-mlp: ", ln)]
    assert progress and all(" step/s " in ln and " ETA " in ln and "holdout" in ln for ln in progress)
    assert re.search(r"^\[2/5\] none-tfidf-bow-mlp-b0-lr0.01-s0: hold-out [01].\d{4}, test [01].\d{4} \(\d+ s\)$",
                     text, re.M)
    assert "smoke: runs: 5/5 (100%)" in text and "5 runs finished: 5 trained now" in text
    assert "| none | tfidf | bow-mlp |" in text and "± – (n=2: no std)" in text
    assert "\x1b[" not in text  # no terminal control codes in a log file
    runs = sorted((tmp_path / "runs" / "smoke").iterdir())
    assert len(runs) == 5 and all(list((r / "tensorboard").glob("events.out.tfevents.*")) for r in runs)
    assert all((r / "metrics.jsonl").stat().st_size > 0 for r in runs)
    out = tmp_path / "results" / "smoke"
    md = (out / "results.md").read_text()
    assert f"Reproduce with `aftpipe run {pipeline} {' '.join(dirs)}`" in md and "n=2: no std" in md
    assert (out / "plot.svg").read_text().lstrip().startswith("<?xml") and (out / "plot.png").exists()
    record = json.loads((runs[0] / "metrics.json").read_text())["record"]
    assert record["command"].startswith(f"aftpipe run {pipeline}") and "tensorboard" in record["command"]


def test_a_run_trained_before_an_option_existed_is_reused_and_a_changed_one_is_not(tmp_path):
    from aftpipe import rundir
    from aftpipe.config import TrainConfig, dump_yaml
    from aftpipe.pipeline import check_reusable

    tc = TrainConfig(dataset="sst2", method="none", epochs=5, out=str(tmp_path / "run"))
    old = tc.to_dict()
    for added in ("test_fraction", "split_seed"):  # a config.yaml written before these options existed
        del old["dataset_options"][added]
    work = rundir.work_dir(tmp_path / "run")
    work.mkdir(parents=True)
    (work / rundir.CONFIG).write_text(dump_yaml(old))
    check_reusable(tmp_path / "run", tc)
    (work / rundir.CONFIG).write_text(dump_yaml({**old, "lr": 0.5}))
    with pytest.raises(AftpipeError, match="was trained with lr=0.5, the pipeline now says 0.001"):
        check_reusable(tmp_path / "run", tc)
