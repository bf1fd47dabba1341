"""Stage 2 end to end on tiny real inputs: every method, the store checks, resume, evaluate, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from aftpipe import rundir
from aftpipe.config import ExtractConfig, TrainConfig
from aftpipe.errors import AftpipeError
from aftpipe.extraction import extract
from aftpipe.methods import METHODS, MethodConfig
from aftpipe.progress import SilentProgress
from aftpipe.rundir import RunResult
from aftpipe.students import StudentConfig
from aftpipe.evaluation import evaluate
from aftpipe.api import train

SMALL = StudentConfig(vocab_size=200, embed_dim=16, width=16, max_length=16)


@pytest.fixture
def reviews_dir(tmp_path, tiny_hf_dir, write_reviews):
    """train.tsv + test.tsv with a learnable signal, and a tiny-BERT feature store for both splits."""
    write_reviews(tmp_path / "data", {"train": 400, "test": 100}, topics=True)
    extract(ExtractConfig(dataset=f"tsv:{tmp_path / 'data'}", sources=(f"hf:{tiny_hf_dir}",),
                          cache_dir=str(tmp_path / "cache"), name="data", workers=0))
    return tmp_path


def cfg(d, tiny_hf_dir, **kw):
    base = dict(dataset=f"tsv:{d / 'data'}", features=(str(d / "cache" / "data" / f"hf-{tiny_hf_dir.name}"),),
                student="bow-mlp", student_options=SMALL, out=str(d / "run"), epochs=3, batch_size=32,
                lr=3e-3, threads=1)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_and_evaluate_reproduces_it(method, reviews_dir, tiny_hf_dir):
    beta = {"beta": 0.5} if METHODS.get(method).regularised() else {}  # the others refuse a β
    m = train(cfg(reviews_dir, tiny_hf_dir, method=method, out=str(reviews_dir / method),
                  method_options=MethodConfig(**beta)))
    assert set(m.to_json()) >= {"test", "holdout", "params", "ms_per_step", "wall_s", "history"}
    assert m.rows["holdout"] == 40 and m.rows["test"] == 100 and m.metric == "accuracy"
    assert (reviews_dir / method / "config.yaml").exists()
    assert evaluate(reviews_dir / method) == m.test
    raw = (reviews_dir / method / "metrics.json").read_text()  # the result is the file, key for key
    assert json.dumps(RunResult.from_json(json.loads(raw)).to_json(), indent=1, sort_keys=True, default=float) == raw
    if method == "linear_probe":
        assert m.params > m.head_params  # the foundation model is part of the probe's size
    else:  # 360 train rows in batches of 32 for 3 epochs, evaluated at least once per epoch
        assert m.params < 200_000 and m.steps == 3 * 12 and [h["step"] for h in m.history][-1] == 36


def test_training_learns_and_aft_reports_sigma_per_source(reviews_dir, tiny_hf_dir):
    m = train(cfg(reviews_dir, tiny_hf_dir, method="aft", epochs=8, method_options=MethodConfig(beta=0.1)))
    assert m.test["accuracy"] > 0.85  # the word lists make the task easy; untrained would be ~0.5
    [src] = m.method["sources"]
    assert 0 < src["sigma_mean"] < 1 and 0 <= src["frac_above_half"] <= 1 and src["store"].endswith(tiny_hf_dir.name)


def test_same_seed_same_result_different_seed_differs(reviews_dir, tiny_hf_dir):
    a = train(cfg(reviews_dir, tiny_hf_dir, out=str(reviews_dir / "a")))
    b = train(cfg(reviews_dir, tiny_hf_dir, out=str(reviews_dir / "b")))
    c = train(cfg(reviews_dir, tiny_hf_dir, out=str(reviews_dir / "c"), seed=1))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_a_run_trains_on_one_thread_unless_told_otherwise(reviews_dir, tiny_hf_dir):
    """As a pipeline's runs do, whatever the machine's cores: the same command gives the same numbers by hand."""
    import dataclasses

    import torch

    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}["threads"]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(cfg(reviews_dir, tiny_hf_dir, threads=default, epochs=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_multi_source_concatenates_and_weights_each_source(reviews_dir, tiny_hf_dir):
    extract(ExtractConfig(dataset=f"tsv:{reviews_dir / 'data'}", sources=("tfidf",), cache_dir=str(reviews_dir / "cache"), name="data",
                          source_options=__import__("aftpipe.sources", fromlist=["x"]).SourceOptions(tfidf_dim=8)))
    c = cfg(reviews_dir, tiny_hf_dir, method="aft")
    m = train(TrainConfig(**{**c.__dict__, "features": (*c.features, str(reviews_dir / "cache" / "data" / "tfidf"))}))
    assert [s["dim"] for s in m.method["sources"]] == [32, 8]


def test_semi_supervised_uses_the_unlabeled_rows(reviews_dir, tiny_hf_dir):
    m = train(cfg(reviews_dir, tiny_hf_dir, method="aft", labels=100, unlabeled=True))
    assert m.rows == {"train": 90, "holdout": 10, "unlabeled": 300, "test": 100, "unlabeled_used": True}


def test_views_are_an_unlabeled_transfer_set_without_the_hold_outs_copies(reviews_dir, tiny_hf_dir):
    from aftpipe.data import DatasetOptions

    opts = DatasetOptions(views=3)
    extract(ExtractConfig(dataset=f"tsv:{reviews_dir / 'data'}", sources=(f"hf:{tiny_hf_dir}",),
                          cache_dir=str(reviews_dir / "cache"), name="data-views3", workers=0, dataset_options=opts))
    store = str(reviews_dir / "cache" / "data-views3" / f"hf-{tiny_hf_dir.name}")
    m = train(cfg(reviews_dir, tiny_hf_dir, method="tokt", features=(store,), dataset_options=opts, steps=20))
    # 400 originals: 360 train + 40 hold-out; 2 copies each, minus the hold-out's 80 copies
    assert m.rows == {"train": 360, "holdout": 40, "unlabeled": 720, "test": 100, "unlabeled_used": True}
    with pytest.raises(AftpipeError, match="extracted with views=3.*pass views=3"):
        train(cfg(reviews_dir, tiny_hf_dir, features=(store,), out=str(reviews_dir / "other")))


def test_changed_rows_or_another_dataset_are_refused_before_training(reviews_dir, tiny_hf_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train", "test"):
        (other / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"x {i}\t{i % 2}\n" for i in range(400)))
    with pytest.raises(AftpipeError, match="does not match dataset.*re-extract"):
        train(cfg(reviews_dir, tiny_hf_dir, dataset=f"tsv:{other}"))
    path = reviews_dir / "data" / "train.tsv"
    lines = path.read_text().splitlines()
    lines[5] = "an edited review\t1"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AftpipeError, match="does not match dataset.*fingerprint"):
        train(cfg(reviews_dir, tiny_hf_dir))
    assert not (reviews_dir / "run" / "metrics.json").exists()


class Stop(Exception):
    pass


class StopAt:
    def __init__(self, step):
        self.step, self.n = step, 0

    def start(self, label, total, done):
        self.n = done

    def advance(self, n, **fields):
        self.n += n
        if self.n == self.step:
            raise Stop()

    def finish(self): ...
    def log(self, message): ...


def test_interrupted_run_resumes_to_the_same_result(reviews_dir, tiny_hf_dir):
    c = cfg(reviews_dir, tiny_hf_dir, method="aft", eval_every=5, out=str(reviews_dir / "r"))
    with pytest.raises(Stop):
        train(c, StopAt(23))  # after the checkpoint at step 20
    with pytest.raises(AftpipeError, match=r"unfinished run \(r.partial\); pass resume=True to continue it or overwrite=True"):
        train(c)  # a Python caller is told the keyword, not the flag
    resumed = train(TrainConfig(**{**c.__dict__, "resume": True}))
    clean = train(TrainConfig(**{**c.__dict__, "out": str(reviews_dir / "clean")}))
    assert resumed.test == clean.test
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in clean.history]


def _cli(reviews_dir, tiny_hf_dir, *extra):
    """A small `aftpipe train` command line; a bow-mlp and its sizes unless `extra` names another student
    (which would refuse the bow-mlp's options)."""
    student = [] if "--student" in extra else ["--student", "bow-mlp", "--vocab-size", "200", "--embed-dim", "16",
                                               "--width", "16"]
    return ["train", "--dataset", f"tsv:{reviews_dir / 'data'}", "--features",
            str(reviews_dir / "cache" / "data" / f"hf-{tiny_hf_dir.name}"), *student, "--epochs", "1", "--quiet",
            *extra]


@pytest.mark.parametrize("extra,needles", [
    (["--method", "nope"], ["no method `nope`", "aft"]),
    (["--student", "nope"], ["no student `nope`", "textcnn"]),
    (["--beta", "-1"], ["--beta must be ≥ 0"]),
    (["--labels", "-5"], ["--labels must be ≥ 1, got -5"]),
    (["--patience", "-1"], ["--patience must be ≥ 1, got -1"]),
    (["--num-classes", "0"], ["--num-classes must be ≥ 1, got 0"]),
    (["--eval-every", "0"], ["--eval-every must be ≥ 1, got 0"]),
    (["--warmup", "2"], ["--warmup is a fraction of the steps"]),
    (["--weight-decay", "-1"], ["--weight-decay must be ≥ 0, got -1"]),
    (["--threads", "-2"], ["--threads must be ≥ 1, got -2"]),
    (["--max-length", "0"], ["--max-length must be ≥ 1, got 0"]),
    (["--text-col", "label"], ["--text-col", "`label` is the label column"]),
    (["--method", "aft", "--phi-norm", "zscore"], ["--phi-norm expected one of none, standardize"]),
    (["--method", "none", "--phi-control", "shuffle"], ["--phi-control: method `none` has no transfer term"]),
    (["--method", "linear_probe", "--phi-control", "gaussian"], ["--phi-control: method `linear_probe` has no"]),
    (["--student", "hf:minilm", "--student-layers", "9"], ["--student-layers 9 is out of range", "6 layers"]),
    (["--student", "hf:/no/such/model"], ["/no/such/model does not exist"]),
    (["--init-embeddings", "tfidf"], ["--init-embeddings `tfidf`", "minilm"]),
    (["--student", "small-cnn"], ["small-cnn", "text"]),
    (["--student", "tiny-transformer", "--embed-dim", "30"], ["embed_dim divisible by 4"]),
    (["--student", "small-cnn", "--vocab-size", "200"], ["--vocab-size does not apply to student `small-cnn`",
                                                         "takes --image-size, --width, --dropout, --student-layers"]),
    (["--num-classes", "1"], ["label 1", "outside 0..0"]),
    (["--train-split", "dev"], ["no split `dev`"]),
])
def test_train_bad_input(extra, needles, reviews_dir, tiny_hf_dir, cli, one_line_error):
    code, _, err = cli(_cli(reviews_dir, tiny_hf_dir, "--out", str(reviews_dir / "x"), *extra))
    one_line_error(code, err, *needles)


def test_train_cli_store_and_run_dir_errors(reviews_dir, tiny_hf_dir, tmp_path, cli, one_line_error):
    base = ["train", "--dataset", f"tsv:{reviews_dir / 'data'}", "--epochs", "1", "--quiet", "--student", "bow-mlp"]
    code, _, err = cli([*base, "--features", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    one_line_error(code, err, "no feature store", "aftpipe extract")
    blocker = tmp_path / "f"
    blocker.write_text("")
    code, _, err = cli(_cli(reviews_dir, tiny_hf_dir, "--out", str(blocker / "run")))
    one_line_error(code, err, "--out")
    out = str(reviews_dir / "done")
    assert cli(_cli(reviews_dir, tiny_hf_dir, "--out", out))[0] == 0
    code, _, err = cli(_cli(reviews_dir, tiny_hf_dir, "--out", out))
    one_line_error(code, err, "already holds a finished run", "--overwrite")
    code, out_text, _ = cli(["evaluate", out])
    assert code == 0 and json.loads(out_text)["match"] is True


def test_train_split_missing_from_the_store(reviews_dir, tiny_hf_dir, tmp_path, cli, one_line_error):
    extract(ExtractConfig(dataset=f"tsv:{reviews_dir / 'data'}", sources=(f"hf:{tiny_hf_dir}",), splits=("test",),
                          cache_dir=str(tmp_path / "c2"), name="data", workers=0))
    code, _, err = cli(["train", "--dataset", f"tsv:{reviews_dir / 'data'}", "--features",
                        str(tmp_path / "c2" / "data" / f"hf-{tiny_hf_dir.name}"), "--out", str(tmp_path / "r"),
                        "--quiet"])
    one_line_error(code, err, "no split `train`", "--splits train")


def test_sigkill_then_resume_finishes(reviews_dir, tiny_hf_dir, wait_for):
    out = reviews_dir / "killed"
    args = [sys.executable, "-m", "aftpipe.cli", *_cli(reviews_dir, tiny_hf_dir, "--out", str(out), "--epochs",
                                                        "400", "--eval-every", "10", "--threads", "1")]
    args = [a for a in args if a != "--quiet"] + ["--quiet"]
    proc = subprocess.Popen(args, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    work = rundir.work_dir(out)
    wait_for(lambda: (work / rundir.CHECKPOINT).exists(), proc, "the first checkpoint was written")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # a run is published under its name only when finished
    step = rundir.load_checkpoint(work)["state"]["step"]
    again = subprocess.run([a if a != "400" else "400" for a in args] + ["--resume", "--steps", str(step + 20)],
                           capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr
    assert f"resuming {out} at step {step}" in again.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == step + 20


def test_diagnostics_track_the_transfer_term_and_aft_reports_its_floor(reviews_dir, tiny_hf_dir):
    m = train(cfg(reviews_dir, tiny_hf_dir, method="aft", method_options=MethodConfig(beta=1.0)))
    reg = m.regulariser
    hist = [h for h in m.history if "holdout_reg" in h]
    assert reg["first"] == hist[0]["holdout_reg"] and reg["last"] == hist[-1]["holdout_reg"]
    assert reg["floor_last"] == hist[-1]["holdout_reg_floor"] and 0 < reg["floor_last"] < 1.5
    kd = train(cfg(reviews_dir, tiny_hf_dir, method="kd_feature", out=str(reviews_dir / "kd")))
    assert "last" in kd.regulariser and "floor_last" not in kd.regulariser  # only AFT has a floor
    none = train(cfg(reviews_dir, tiny_hf_dir, method="none", out=str(reviews_dir / "none")))
    assert none.regulariser == {}


def test_controls_train_and_change_what_the_student_sees(reviews_dir, tiny_hf_dir):
    base = train(cfg(reviews_dir, tiny_hf_dir, method="aft", out=str(reviews_dir / "a")))
    shuffled = train(cfg(reviews_dir, tiny_hf_dir, method="aft", phi_control="shuffle", out=str(reviews_dir / "b")))
    assert shuffled.phi_control == "shuffle"
    assert [h["reg"] for h in shuffled.history] != [h["reg"] for h in base.history]


def test_select_last_keeps_the_final_weights(reviews_dir, tiny_hf_dir):
    from safetensors.torch import load_file

    c = cfg(reviews_dir, tiny_hf_dir, method="none", select="last", patience=None, eval_every=3)
    m = train(c)
    assert m.select == "last"
    import torch

    from aftpipe import rundir

    best = train(dataclasses_replace(c, select="best", out=str(reviews_dir / "best")))
    last_w, best_w = load_file(str(reviews_dir / "run" / "student.safetensors")), load_file(
        str(reviews_dir / "best" / "student.safetensors"))
    assert best.best_step < best.steps or m.test == best.test  # best differs only if it came earlier
    if best.best_step < best.steps:
        assert any(not torch.equal(last_w[k], best_w[k]) for k in last_w)
    assert rundir.is_finished(reviews_dir / "run")


def dataclasses_replace(c, **kw):
    import dataclasses

    return dataclasses.replace(c, **kw)


def test_metrics_jsonl_grows_per_evaluation_and_a_resume_keeps_it_consistent(reviews_dir, tiny_hf_dir):
    from aftpipe.tracking import read_log

    c = cfg(reviews_dir, tiny_hf_dir, method="aft", eval_every=5, out=str(reviews_dir / "r"))
    with pytest.raises(Stop):
        train(c, StopAt(23))  # checkpoint at step 20
    work = rundir.work_dir(c.out)  # an unfinished run lives in <out>.partial
    assert [r["step"] for r in read_log(work)] == [5, 10, 15, 20]
    with open(work / "metrics.jsonl", "a") as f:  # as if killed after logging step 25 but before its checkpoint
        f.write(json.dumps({"step": 25, "loss": 9.9}) + "\n")
    resumed = train(TrainConfig(**{**c.__dict__, "resume": True}))
    rows = read_log(c.out)
    assert [r["step"] for r in rows] == [h["step"] for h in resumed.history] + [36]
    for row, h in zip(rows, resumed.history):
        assert {k: row[k] for k in ("loss", "ce", "reg", "lr", "holdout_accuracy")} == \
            {k: h[k] for k in ("loss", "ce", "reg", "lr", "holdout_accuracy")}
    assert rows[-1] == {"step": 36, **{f"test_{k}": v for k, v in resumed.test.items()}}


def test_a_run_records_where_it_came_from(reviews_dir, tiny_hf_dir):
    import os

    import torch

    from aftpipe.provenance import manifest_sha256
    from aftpipe.store import open_features

    m = train(cfg(reviews_dir, tiny_hf_dir, method="none", epochs=1))
    rec = m.record
    assert {"aftpipe", "torch", "scikit-learn", "numpy", "python"} <= set(rec["packages"])
    assert rec["created"][:2] == "20" and rec["command"] is None and rec["argv"]  # Python, not the CLI
    assert rec["git"] is None or len(rec["git"]["commit"]) == 40
    kernels = rec["cpu_kernels"]  # what the numbers depend on besides the code: the CPU's kernels, the threads
    assert kernels["threads"] == 1 and kernels["aten"] == torch.backends.cpu.get_cpu_capability() and kernels["cpu"]
    assert kernels["MKL_CBWR"] == os.environ.get("MKL_CBWR")
    [store] = rec["stores"]
    st = open_features(store["path"])
    assert store["manifest_sha256"] == manifest_sha256(st.manifest)
    assert store["splits"]["train"]["fingerprint"] == st.split_info("train").fingerprint
    assert set(store["splits"]) == {"train", "test"}
    assert json.loads((reviews_dir / "run" / "metrics.json").read_text())["record"] == rec


def test_ctrl_c_says_what_was_kept_and_how_to_resume(reviews_dir, tiny_hf_dir, cli, monkeypatch):
    from aftpipe.training import Trainer

    real = Trainer.step

    def step(self, idx):
        if self.state["step"] == 13:
            raise KeyboardInterrupt
        return real(self, idx)

    monkeypatch.setattr(Trainer, "step", step)
    out = reviews_dir / "ctrl-c"
    args = ["--out", str(out), "--eval-every", "5", "--epochs", "3", "--batch-size", "32"]  # 12 steps an epoch
    code, _, err = cli(_cli(reviews_dir, tiny_hf_dir, *args))
    assert code == 130
    assert err.strip().splitlines()[-1] == (f"interrupted: {rundir.work_dir(out)} keeps its checkpoint at step 10 "
                                            "of 36; re-run with --resume to continue")
    monkeypatch.setattr(Trainer, "step", real)
    code, _, err = cli(_cli(reviews_dir, tiny_hf_dir, *args, "--resume"))
    assert code == 0 and f"resuming {out} at step 10 of 36" in err, err


def test_python_configs_take_python_values_and_refuse_wrong_types():
    from aftpipe.config import ConfigError

    c = TrainConfig(dataset="sst2", features="cache/sst2/minilm", out="runs/x", method_options={"beta": 0.3})
    assert c.features == ("cache/sst2/minilm",) and c.method_options.beta == 0.3
    with pytest.raises(ConfigError, match=r"^lr: expected a number, got '1e-3'$"):
        TrainConfig(dataset="sst2", features="cache/sst2/minilm", out="runs/x", lr="1e-3")
    with pytest.raises(ConfigError, match=r"^report_to\[0\]: expected one of tensorboard, wandb, got 'mlflow'$"):
        TrainConfig(dataset="sst2", out="runs/x", method="none", report_to="mlflow")


def test_a_parquet_dataset_trains_exactly_as_the_same_rows_in_tsv(tmp_path, tiny_hf_dir, write_reviews):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tsv = write_reviews(tmp_path / "tsv", {"train": 200, "test": 50}, topics=True, named=True)
    (tmp_path / "pq").mkdir()
    for name in ("train", "test"):
        rows = [line.split("\t") for line in (tsv / f"{name}.tsv").read_text().splitlines()[1:]]
        pq.write_table(pa.table({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}),
                       tmp_path / "pq" / f"{name}.parquet")
    runs = {}
    for kind, folder in (("parquet", tmp_path / "pq"), ("tsv", tsv)):
        [r, _] = extract(ExtractConfig(dataset=f"{kind}:{folder}", sources=(f"hf:{tiny_hf_dir}",),
                                       cache_dir=str(tmp_path / kind / "cache"), workers=0))
        runs[kind] = train(TrainConfig(dataset=f"{kind}:{folder}", features=(str(r.path),), student="bow-mlp",
                                       student_options=SMALL, out=str(tmp_path / kind / "run"), epochs=2,
                                       batch_size=32, threads=1))
    assert runs["parquet"].rows == runs["tsv"].rows and runs["parquet"].rows["test"] == 50
    assert [h["loss"] for h in runs["parquet"].history] == [h["loss"] for h in runs["tsv"].history]
    assert runs["parquet"].test == runs["tsv"].test


def test_the_probe_names_the_run_folder_it_publishes_not_its_work_folder(reviews_dir, tiny_hf_dir):
    class Recorder(SilentProgress):
        lines: list[str] = []

        def log(self, message: str) -> None:
            self.lines.append(message)

    out = reviews_dir / "probe"
    train(cfg(reviews_dir, tiny_hf_dir, method="linear_probe", out=str(out)), Recorder())
    [line] = [m for m in Recorder.lines if m.startswith("linear probe")]
    assert line.endswith(f"→ {out}") and out.is_dir()


def test_the_probe_is_its_own_recipe_and_writes_a_run_folder_of_its_own(reviews_dir, tiny_hf_dir, monkeypatch):
    from aftpipe.training import Trainer

    def no_student(*args, **kwargs):
        raise AssertionError("the probe trained a student")

    monkeypatch.setattr(Trainer, "__init__", no_student)
    out = reviews_dir / "probe-recipe"
    r = train(cfg(reviews_dir, tiny_hf_dir, method="linear_probe", out=str(out)))
    assert r.is_probe and r.steps is None and r.method["name"] == "linear_probe" and r.params > r.head_params > 0
    assert rundir.read_result(out).test == r.test and sorted(p.name for p in out.glob("*.safetensors")) == ["head.safetensors"]
    with pytest.raises(AssertionError, match="trained a student"):
        train(cfg(reviews_dir, tiny_hf_dir, method="none", out=str(reviews_dir / "student")))
