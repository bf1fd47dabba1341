"""`aftpipe distill`: the whole recipe on tiny random-init models, its cached stages (kill and resume, re-run,
a changed option), the output folder, and the pieces it is made of."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from aftpipe.config import DistillConfig
from aftpipe.distillation import (
    Stages,
    agreement,
    choose,
    distill,
    plan_recipe,
    teacher_steps,
    trade_off,
)
from aftpipe.errors import AftpipeError
from aftpipe.features import agreement_split
from aftpipe.progress import SilentProgress

SMALL = "textcnn@vocab_size=200,embed_dim=16,width=16,max_length=16"


def tiny_config(data: Path, model: Path, out: Path, **kw) -> DistillConfig:
    base = {"dataset": f"tsv:{data}", "labels": 60, "teacher": f"hf:{model}", "student": SMALL, "teacher_steps": 4,
            "teacher_eval_every": 2, "teacher_batch_size": 16, "student_steps": 6, "student_lr": (3e-3, 1e-2),
            "views": 1, "agreement_rows": 40, "cache_dir": str(out.parent / "cache"), "threads": 1, "out": str(out),
            "onnx": False}
    return DistillConfig(**{**base, **kw})


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` → its sha256 (what a no-op re-run must leave as it was)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def computed(monkeypatch) -> list[str]:
    """The names of the stages that compute something (are not read back from the folder), in order."""
    names: list[str] = []
    real = Stages.run

    def run(self, name, key, outputs, fn, what, owned=True):
        def spied():
            names.append(name)
            return fn()
        return real(self, name, key, outputs, spied, what, owned)

    monkeypatch.setattr(Stages, "run", run)
    return names


@pytest.fixture(scope="module")
def data(tmp_path_factory, write_reviews) -> Path:
    return write_reviews(tmp_path_factory.mktemp("distill-data") / "reviews", {"train": 300, "test": 80}, topics=True,
                         named=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data, tiny_hf_dir) -> tuple[DistillConfig, dict]:
    """One uninterrupted distill with every stage (ONNX included), two seeds and two candidate lrs."""
    cfg = tiny_config(data, tiny_hf_dir, tmp_path_factory.mktemp("distill") / "out", onnx=True, seeds=2)
    return cfg, distill(cfg, SilentProgress())


def test_distill_makes_a_model_folder_with_its_teacher_export_and_report(finished, data):
    import aftpipe

    cfg, report = finished
    out = Path(cfg.out)
    model = aftpipe.load_model(out)  # the folder is the student's model folder
    assert model.spec.student == SMALL and model.spec.method["name"] == "tokt"
    assert set(model.predict(["good great film", "awful dull plot"])) <= {"neg", "pos"}
    assert (out / "onnx" / "model.onnx").is_file() and (out / "teacher" / "metrics.json").is_file()
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"teacher", "student", "probe", "none"}
    assert len(rows["student"]["values"]) == 2 and rows["student"]["std"] is not None  # --seeds 2
    assert rows["student"]["params"] == model.spec.params < rows["teacher"]["params"]
    for r in rows.values():
        assert r["bytes"] > 0 and r["per_s_batch1"] > 0 and r["per_s_batch64"] > 0
    # the card's sentence is computed from the measured rows
    ratio = rows["teacher"]["params"] / rows["student"]["params"]
    gap = (rows["teacher"]["test"] - rows["student"]["test"]) * 100
    card = (out / "README.md").read_text()
    assert f"1/{ratio:.0f} of the fine-tuned" in card and f"{abs(gap):.1f} points" in card
    assert report["trade_off"] in card and report["trade_off"] in (out / "report.md").read_text()
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "report.json").read_text()) == report
    # both candidates scored on the hold-out and by agreement; the chosen one has the best hold-out score
    cands = report["candidates"]
    assert [c["lr"] for c in cands] == [3e-3, 1e-2] and all(c["agreement_rows"] == 40 for c in cands)
    assert [c.get("chosen", False) for c in cands].count(True) == 1
    assert max(cands, key=lambda c: c["holdout"]).get("chosen")


def test_the_probe_store_holds_only_the_rows_a_probe_needs(finished):
    """The frozen model is run over the labeled rows (hold-out included) and the test split, not the unlabeled
    pool; the probe trains on those rows and is scored on every test row."""
    from aftpipe import rundir
    from aftpipe.store import open_features

    cfg, report = finished
    cache = Path(cfg.cache_dir)
    folders = [p.name for p in cache.iterdir() if p.name.startswith("reviews-tsv-")]
    # never the dataset's own folder, which a full store may take
    assert len(folders) == 1 and "-labeled60-" in folders[0]
    store = cache / folders[0] / f"hf-{Path(cfg.teacher.removeprefix('hf:')).name}"
    infos = {i.name: i for i in open_features(store).split_infos()}
    assert infos["train"].n == 60 and infos["test"].n == 80 and all(i.complete for i in infos.values())
    rows = rundir.read_result(Path(cfg.out) / "runs" / "probe").rows
    assert rows["stored_rows_only"] == {"train": [60, 300], "test": [80, 80]} and rows["test"] == 80
    probe_row = next(r for r in report["rows"] if r["model"] == "probe")
    assert 0.0 <= probe_row["test"] <= 1.0


def test_a_damaged_store_of_chosen_rows_is_repaired_with_the_same_rows(finished, tmp_path):
    import shutil

    from aftpipe.extraction import repair
    from aftpipe.store import open_features

    cfg, _ = finished
    [folder] = [p for p in Path(cfg.cache_dir).iterdir() if "-labeled60-" in p.name]
    store = tmp_path / folder.name / next(p.name for p in folder.iterdir() if p.name.startswith("hf-"))
    shutil.copytree(folder / store.name, store)
    want = open_features(store).split("train").to_memory()
    shard = next(p for p in (store / "train" / "features").rglob("*") if p.is_file() and p.name != "zarr.json")
    shard.write_bytes(b"damaged")
    repair(store, SilentProgress())
    got = open_features(store).split("train", verify=True)
    assert np.array_equal(got.index, want.index) and len(got.index) == 60
    assert np.array_equal(got.to_memory()[np.arange(60)], want[np.arange(60)])


def test_a_full_store_already_in_the_cache_serves_the_probe(data, tiny_hf_dir, tmp_path, computed):
    from aftpipe.config import ExtractConfig
    from aftpipe.distillation import _extract_config, _store
    from aftpipe.extraction import extract

    cfg = tiny_config(data, tiny_hf_dir, tmp_path / "out", student_lr=(1e-2,))
    extract(ExtractConfig(dataset=cfg.dataset, sources=(cfg.teacher,), cache_dir=cfg.cache_dir, workers=0),
            SilentProgress())
    before = sorted(p.name for p in Path(cfg.cache_dir).iterdir())
    distill(cfg, SilentProgress())
    assert sorted(p.name for p in Path(cfg.cache_dir).iterdir()) == before  # no store of the labeled rows made
    r = plan_recipe(cfg)
    full = _store(r, _extract_config(r, cfg.teacher, cfg.cache_dir, 1))
    probe = (tmp_path / "out" / "runs" / "probe" / "config.yaml").read_text()
    assert str(full) in probe and "stored_rows_only: true" not in probe


def test_a_finished_distill_rerun_changes_nothing(finished, computed):
    cfg, report = finished
    before = files(Path(cfg.out))
    assert distill(cfg, SilentProgress()) == report
    assert computed == [] and files(Path(cfg.out)) == before


@pytest.mark.parametrize("stage", ["teacher", "teacher-store", "student-lr0.01-s0", "probe-store", "probe", "none-s0",
                                   "publish", "onnx", "report"])
def test_a_killed_distill_resumes_where_it_stopped(stage, finished, data, tiny_hf_dir, tmp_path, monkeypatch,
                                                   computed):
    """A stage killed (after its work, before the folder records it finished) is the one computed again: the
    stages before it are read back, and the result is the uninterrupted run's."""
    cfg = tiny_config(data, tiny_hf_dir, tmp_path / "out", onnx=stage == "onnx")
    real = Stages.run

    def dying(self, name, key, outputs, fn, what, owned=True):
        def work_then_die():
            fn()
            raise KeyboardInterrupt
        return real(self, name, key, outputs, work_then_die if name == stage else fn, what, owned)

    with monkeypatch.context() as m:
        m.setattr(Stages, "run", dying)
        with pytest.raises(KeyboardInterrupt):
            distill(cfg, SilentProgress())
    first = list(computed)
    computed.clear()
    distill(cfg, SilentProgress())
    assert computed[0] == stage and not set(computed[1:]) & set(first)  # nothing before it was redone
    ref = Path(finished[0].out)
    for folder in ("teacher", "runs/tokt-lr0.01-s0", "runs/none-s0"):  # same weights as the uninterrupted run
        got, want = (json.loads((p / folder / "model.json").read_text())["weights"] for p in (tmp_path / "out", ref))
        assert got["sha256"] == want["sha256"], folder


def test_a_killed_views_store_resumes_and_ends_as_an_uninterrupted_run(data, tiny_hf_dir, tmp_path, monkeypatch,
                                                                        computed):
    cfg = tiny_config(data, tiny_hf_dir, tmp_path / "out", labels=None, views=None, student_lr=(1e-2,),
                      baselines=False)
    real = Stages.run

    def dying(self, name, key, outputs, fn, what, owned=True):
        def work_then_die():
            fn()
            raise KeyboardInterrupt
        return real(self, name, key, outputs, work_then_die if name == "teacher-store-views8" else fn, what, owned)

    with monkeypatch.context() as m:
        m.setattr(Stages, "run", dying)
        with pytest.raises(KeyboardInterrupt):
            distill(cfg, SilentProgress())
    computed.clear()
    resumed = distill(cfg, SilentProgress())
    assert computed[0] == "teacher-store-views8" and "teacher" not in computed and "teacher-store" not in computed
    fresh = distill(dataclasses.replace(cfg, out=str(tmp_path / "fresh")), SilentProgress())
    assert [c["test"] for c in resumed["candidates"]] == [c["test"] for c in fresh["candidates"]]


def test_a_run_killed_mid_training_continues_from_its_checkpoint(data, tiny_hf_dir, tmp_path, monkeypatch, computed):
    from aftpipe import training

    cfg = tiny_config(data, tiny_hf_dir, tmp_path / "out", baselines=False, student_steps=40)
    calls = {"n": 0}
    real_step = training.Trainer.step

    def step(self, idx):
        calls["n"] += 1
        if self.cfg.method == "tokt" and calls["n"] > 25:
            raise KeyboardInterrupt
        return real_step(self, idx)

    with monkeypatch.context() as m:
        m.setattr(training.Trainer, "step", step)
        with pytest.raises(KeyboardInterrupt):
            distill(cfg, SilentProgress())
    assert (tmp_path / "out" / "runs" / "tokt-lr0.003-s0.partial").is_dir()  # the half-trained student is kept
    computed.clear()
    resumed = distill(cfg, SilentProgress())
    assert computed[0] == "student-lr0.003-s0" and "teacher" not in computed
    fresh = distill(dataclasses.replace(cfg, out=str(tmp_path / "fresh")), SilentProgress())
    assert resumed["rows"][1]["values"] == fresh["rows"][1]["values"]


def test_a_changed_option_reruns_only_the_stages_it_affects(finished, tmp_path, computed, cli):
    import shlex
    import shutil

    from aftpipe.config import command_line

    cfg, _ = finished
    out = tmp_path / "out"
    shutil.copytree(cfg.out, out)
    changed = dataclasses.replace(cfg, out=str(out), teacher_steps=6)
    code, stdout, stderr = cli([*shlex.split(command_line(changed, "distill"))[1:], "--quiet"])
    assert code == 0, stderr
    assert "distill · teacher: fine-tuning" in stderr + stdout  # the progress names the stage
    assert json.loads((out / "report.json").read_text())["trade_off"] in stdout  # the report is printed
    assert computed[:3] == ["teacher", "teacher-store", "student-lr0.003-s0"]
    assert not {"probe-store", "probe", "none-s0", "none-s1"} & set(computed)  # they never saw the teacher
    assert {"publish", "onnx", "report"} <= set(computed)


def test_an_image_dataset_with_a_timm_teacher(tiny_timm_dir, tmp_path):
    cfg = DistillConfig(dataset="digits", labels=200, teacher=f"timm:{tiny_timm_dir}", teacher_image_size=32,
                        student="small-cnn@width=8,layers=1", teacher_steps=2, teacher_eval_every=1,
                        teacher_batch_size=16, student_steps=4,
                        agreement_rows=50, baselines=False, threads=1, out=str(tmp_path / "out"), onnx=False)
    report = distill(cfg, SilentProgress())
    assert report["modality"] == "image" and report["views"] == 1 and report["init_embeddings"] is None
    assert [r["model"] for r in report["rows"]] == ["teacher", "student"]
    assert "images/s" in (tmp_path / "out" / "report.md").read_text()


# --- what the recipe settles from the data ---------------------------------------------------------------
def write_formats(folder: Path, labels: list) -> dict[str, str]:
    """The same small dataset as tsv, csv, jsonl, parquet and an hf: DatasetDict folder, labels as given."""
    import pandas as pd

    rng = np.random.default_rng(0)
    words = ["good", "great", "bad", "awful", "film", "plot"]
    frames = {split: pd.DataFrame({"text": [" ".join(rng.choice(words, 4)) for _ in range(n)],
                                   "label": [labels[i % len(labels)] for i in range(n)]})
              for split, n in (("train", 120), ("test", 30))}
    specs = {}
    for fmt in ("tsv", "csv", "jsonl", "parquet"):
        (folder / fmt).mkdir(parents=True)
        for split, df in frames.items():
            path = folder / fmt / f"{split}.{fmt}"
            if fmt == "tsv":
                df.to_csv(path, sep="\t", index=False)
            elif fmt == "csv":
                df.to_csv(path, index=False)
            elif fmt == "jsonl":
                df.to_json(path, orient="records", lines=True)
            else:
                df.to_parquet(path)
        specs[fmt] = f"{fmt}:{folder / fmt}"
    import datasets

    datasets.DatasetDict({k: datasets.Dataset.from_pandas(v) for k, v in frames.items()}).save_to_disk(folder / "hf")
    specs["hf"] = f"hf:{folder / 'hf'}"
    return specs


@pytest.mark.parametrize("labels", [["neg", "pos", "mixed"], [0, 1]], ids=["string-labels", "integer-labels"])
def test_every_text_format_plans_the_recipe(labels, tmp_path, tiny_hf_dir):
    for fmt, spec in write_formats(tmp_path, labels).items():
        with_unlabeled = plan_recipe(DistillConfig(dataset=spec, labels=60, teacher=f"hf:{tiny_hf_dir}", out="x"))
        every_label = plan_recipe(DistillConfig(dataset=spec, teacher=f"hf:{tiny_hf_dir}", out="x"))
        assert with_unlabeled.student == "textcnn" and with_unlabeled.pool == 60, fmt
        assert with_unlabeled.student_options.init_embeddings == f"hf:{tiny_hf_dir}", fmt  # same WordPiece vocabulary
        # 60 unlabeled rows next to 60 labels, and none at all: both try augmented views beside the rows alone
        assert with_unlabeled.views == (1, 8) and every_label.views == (1, 8) and every_label.pool == 0, fmt
        assert every_label.agreement_n == 0 and with_unlabeled.agreement_n == 15, fmt


def test_a_large_unlabeled_pool_needs_no_views(tmp_path, tiny_hf_dir, write_reviews):
    data = write_reviews(tmp_path / "reviews", {"train": 600, "test": 80}, topics=True, named=True)
    r = plan_recipe(DistillConfig(dataset=f"tsv:{data}", labels=40, teacher=f"hf:{tiny_hf_dir}", out="x"))
    assert r.views == (1,) and r.agreement_n == 560 // 4  # a quarter of the pool at most


@pytest.mark.parametrize(("kw", "needle"), [
    ({"labels": 12}, "labeled rows; a 10% hold-out needs at least 10 of every class"),
    ({"init_embeddings": "hf:{timm}"}, "its vocabulary is not the students' WordPiece vocabulary"),
    ({"teacher": "tfidf"}, "cannot be fine-tuned"),
    ({"teacher": "timm:{timm}"}, "is for image but dataset"),
    ({"student": "small-cnn"}, "is for image but dataset"),
    ({"teacher": "hf:/no/such/model"}, "does not exist"),
])
def test_what_cannot_work_is_refused_before_anything_is_written(kw, needle, data, tiny_timm_dir, tiny_hf_dir,
                                                                  tmp_path):
    kw = {k: v.format(timm=tiny_timm_dir) if isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises(AftpipeError, match=needle.replace(".", r"\.")):
        distill(tiny_config(data, tiny_hf_dir, tmp_path / "out", **kw), SilentProgress())
    assert not (tmp_path / "out").exists()


def test_another_folder_is_never_taken_over(data, tiny_hf_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(AftpipeError, match="not an `aftpipe distill` folder"):
        distill(tiny_config(data, tiny_hf_dir, tmp_path / "out"), SilentProgress())
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


# --- the pieces -----------------------------------------------------------------------------------------
def test_agreement_rows_are_kept_out_with_their_augmented_copies():
    unlabeled = np.arange(10, 40)
    origin = np.arange(60)
    origin[50:60] = np.arange(10, 20)  # rows 50..59 are views of 10..19
    kept, held = agreement_split(np.concatenate([unlabeled, np.arange(50, 60)]), 5, 0, origin)
    assert len(held) == 5 and set(held) <= set(range(10, 40))
    assert not set(kept) & set(held) and not {r for r in kept if origin[r] in set(held)}
    assert len(kept) == 40 - 5 - sum(1 for h in held if h < 20)
    _, held_again = agreement_split(np.concatenate([unlabeled, np.arange(50, 60)]), 5, 0, origin)
    assert list(held_again) == list(held)  # seeded: training and the score keep out the same rows


def test_agreement_and_choice():
    t = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert agreement(np.array([1, 0, 0, 0]), t) == 0.75
    cands = [{"holdout": 0.8, "agreement": 0.7}, {"holdout": 0.8, "agreement": 0.9},
             {"holdout": 0.7, "agreement": float("nan")}]
    assert choose(cands, "holdout") is cands[0]  # a tie goes to the first in grid order
    assert choose(cands, "agreement") is cands[1]
    no_pool = [{"holdout": 0.6, "agreement": float("nan")}, {"holdout": 0.7, "agreement": float("nan")}]
    assert choose(no_pool, "agreement") is no_pool[1]  # nothing to agree on: the hold-out decides


def test_the_teachers_length_follows_the_labeled_rows():
    assert teacher_steps(4, 1800, 32) == 300  # SST-2-2k: 225 steps would be fewer than the 300 measured
    assert teacher_steps(4, 5400, 32) == 675  # AG News' 6,000 labels: 4 passes
    assert teacher_steps(4, 7696, 32) == 900  # CoLA: 962, capped
    assert teacher_steps(2, 5400, 64, (10, 10_000)) == 169


def test_the_teacher_trains_longer_on_more_labels(data, tiny_hf_dir):
    small = plan_recipe(DistillConfig(dataset=f"tsv:{data}", labels=60, teacher=f"hf:{tiny_hf_dir}", out="x",
                                      teacher_epochs=200))
    every = plan_recipe(DistillConfig(dataset=f"tsv:{data}", teacher=f"hf:{tiny_hf_dir}", out="x", teacher_epochs=200))
    assert small.teacher.steps == teacher_steps(200, 54, 32) < every.teacher.steps == teacher_steps(200, 270, 32)
    given = plan_recipe(DistillConfig(dataset=f"tsv:{data}", teacher=f"hf:{tiny_hf_dir}", out="x", teacher_steps=7))
    assert given.teacher.steps == 7


def test_a_small_pool_tries_the_rows_alone_and_augmented_views(data, tiny_hf_dir, tmp_path):
    """No unlabeled rows: students over the labeled rows alone and over their word-dropout views are both trained
    and the hold-out picks one; each candidate's test score is reported beside it."""
    cfg = tiny_config(data, tiny_hf_dir, tmp_path / "out", labels=None, views=None, student_lr=(1e-2,),
                      baselines=False)
    report = distill(cfg, SilentProgress())
    cands = report["candidates"]
    assert [c["views"] for c in cands] == [1, 8] and report["views_tried"] == [1, 8]
    assert all(math.isnan(c["agreement"]) and 0 <= c["test"] <= 1 for c in cands)
    best = max(cands, key=lambda c: c["holdout"])
    assert best.get("chosen") and report["views"] == best["views"]
    assert (tmp_path / "out" / "runs" / "tokt-views8-lr0.01-s0" / "metrics.json").is_file()
    stages = json.loads((tmp_path / "out" / "stages.json").read_text())
    assert {"teacher-store", "teacher-store-views8", "student-lr0.01-s0", "student-views8-lr0.01-s0"} <= set(stages)


def test_trade_off_sentence():
    assert trade_off(442_502, 22_713_986, "MiniLM", 66.2, 0.0241) == \
        "0.44M parameters, 1/51 of MiniLM, 66× its throughput, 2.4 points below the teacher"
    assert trade_off(442_502, 8_800_000, "MiniLM", 3.14, -0.005).endswith(
        "3.1× its throughput, 0.5 points above the teacher")


# --- teachers in pipelines: the same teacher, from the same code ------------------------------------------
def test_a_pipeline_fine_tunes_its_teacher_first_and_distils_from_it(data, tiny_hf_dir, tmp_path):
    from aftpipe.config import TeacherConfig, load_config
    from aftpipe.data import load_dataset
    from aftpipe.pipeline import load_pipeline, validate
    from aftpipe.sweep import run_pipeline
    from aftpipe.teacher import teacher_train_config
    from aftpipe.training import train

    yaml = tmp_path / "taught.yaml"
    yaml.write_text(f"""\
# aftpipe run taught.yaml
dataset: tsv:{data}
labels: 60
teachers:
  tiny-teacher: {{model: "hf:{tiny_hf_dir}", steps: 4, eval_every: 2, batch_size: 16, max_length: 16}}
sources:
  teacher: ["teacher:tiny-teacher"]
students: ["{SMALL}"]
methods:
  - {{name: tokt, unlabeled: true, train: {{steps: 6}}}}
  - {{name: linear_probe}}
seeds: [0]
train: {{threads: 1}}
""")
    dirs = {"cache_dir": tmp_path / "cache", "runs_dir": tmp_path / "runs"}
    assert f"teacher `tiny-teacher`: hf:{tiny_hf_dir} fine-tuned first" in validate(yaml, **dirs)
    out = run_pipeline(yaml, results_dir=tmp_path / "results", **dirs)
    teacher = tmp_path / "runs" / "teachers" / "tiny-teacher"
    store = tmp_path / "cache" / load_dataset(f"tsv:{data}").name / "model-tiny-teacher"
    assert (teacher / "metrics.json").is_file() and store.is_dir()
    assert "tokt" in (out / "results.md").read_text()
    # the run `distill` would train for this teacher on these rows is the one the pipeline trained
    cfg = load_pipeline(yaml)
    want = teacher_train_config(TeacherConfig(model=f"hf:{tiny_hf_dir}", steps=4, eval_every=2, batch_size=16,
                                              max_length=16), cfg.train_template(), teacher)
    assert load_config(type(want), teacher / "config.yaml") == want
    assert train(want).test == json.loads((teacher / "metrics.json").read_text())["test"]  # read back, not retrained
    assert "0 to extract" in validate(yaml, **dirs)


def test_a_pipeline_source_must_name_a_declared_teacher(tmp_path):
    from aftpipe.pipeline import load_pipeline

    yaml = tmp_path / "p.yaml"
    yaml.write_text("dataset: sst2\nteachers: {t1: {model: minilm}}\nsources: {s: ['teacher:t2']}\n"
                    "methods: [{name: none}]\n")
    with pytest.raises(AftpipeError, match=r"sources\.s\[0\]: no teacher `t2` in `teachers:` \(t1\)"):
        load_pipeline(yaml)
    yaml.write_text("dataset: sst2\nteachers: {t1: {model: tfidf}}\nsources: {s: ['teacher:t1']}\n"
                    "methods: [{name: none}]\n")
    with pytest.raises(AftpipeError, match=r"teachers\.t1\.model: `tfidf` cannot be fine-tuned"):
        load_pipeline(yaml)


def test_the_report_says_when_there_were_no_rows_to_measure_agreement_on():
    from aftpipe.distillation import _markdown

    row = {"what": "x", "test": 0.8, "std": None, "values": [0.8], "params": 10, "bytes": 2**20,
           "per_s_batch1": 5.0, "per_s_batch64": 50.0}
    report = {"out": "o", "student": "textcnn", "trade_off": "t", "dataset": "d", "test_split": "test",
              "metric": "accuracy", "labels": "every", "machine": "m", "modality": "text", "select_by": "holdout",
              "rows": [row], "stages": {"teacher": {"wall_s": 1.0}},
              "candidates": [{"lr": 0.01, "views": 8, "holdout": 0.9, "agreement": float("nan"), "agreement_rows": 0,
                              "test": 0.85, "chosen": True}]}
    assert "| 0.01 | 8 | 0.9000 | – | 0.8500 | yes |" in _markdown(report) and "nan" not in _markdown(report)


def test_a_student_never_trains_on_the_agreement_rows(data):
    from aftpipe.config import TrainConfig
    from aftpipe.features import plan_rows
    from aftpipe.training import load_run_data

    cfg = TrainConfig(dataset=f"tsv:{data}", out="x", method="none", labels=60, agreement_rows=40)
    rows = load_run_data(cfg).plan
    train = load_run_data(TrainConfig(dataset=f"tsv:{data}", out="x", method="none")).train
    every = plan_rows(np.arange(len(train)), train.labels, 60, cfg.holdout, cfg.data_seed)
    held = agreement_split(every.unlabeled, 40, cfg.data_seed)[1]
    assert len(rows.unlabeled) == len(every.unlabeled) - 40 and not set(rows.unlabeled) & set(held)
    assert list(rows.train) == list(every.train) and list(rows.holdout) == list(every.holdout)  # labels untouched


def test_a_missing_onnx_exporter_is_refused_before_training(data, tiny_hf_dir, tmp_path, monkeypatch):
    from aftpipe import export

    def missing() -> None:
        raise AftpipeError("ONNX export needs onnxscript; install them with `pip install 'aftpipe[export]'`")

    monkeypatch.setattr(export, "_require_onnx", missing)
    with pytest.raises(AftpipeError, match="aftpipe\\[export\\]'`, or pass onnx=False to skip the export"):
        distill(tiny_config(data, tiny_hf_dir, tmp_path / "out", onnx=True), SilentProgress())
    assert not (tmp_path / "out").exists()
