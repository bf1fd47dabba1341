"""`aftpipe export --format onnx`: the graph, its verification, refusals, and the README's no-torch example."""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from aftpipe import load_model
from aftpipe.config import TrainConfig
from aftpipe.errors import AftpipeError
from aftpipe.export import TOLERANCE, export_model
from aftpipe.students import StudentConfig
from aftpipe.training import train

README = Path(__file__).resolve().parents[1] / "README.md"
SENTENCES = ["superb great fine cast", "awful dull bad plot plot", "good", "", "[SEP] boring [CLS] film " * 6]


@pytest.fixture(scope="module")
def exported(text_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "student-onnx"
    export_model(text_runs["student"], out)
    return out


def onnx_logits(folder: Path, texts: list[str], longest: bool = False) -> np.ndarray:
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if longest:
        tok.enable_padding()
    enc = tok.encode_batch(texts)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                                    "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)})[0]


def test_export_writes_a_folder_onnx_runtime_runs_with_dynamic_axes(exported, text_runs):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.onnx", "tokenizer.json"]
    config = json.loads((exported / "config.json").read_text())
    assert config["labels"] == ["neg", "pos"] and config["max_length"] == 16 and config["output"] == "logits"
    assert config["verified"]["rows"] == 64 and config["verified"]["max_abs_diff"] <= TOLERANCE
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("input_ids", ["batch", "sequence"]),
                                                                 ("attention_mask", ["batch", "sequence"])]
    want = load_model(text_runs["student"]).logits(SENTENCES)
    for longest in (False, True):  # padded to max_length as shipped, and to the longest text
        assert np.abs(onnx_logits(exported, SENTENCES, longest) - want).max() <= TOLERANCE
    for i in range(len(SENTENCES)):  # batch 1, each at its own length
        got = onnx_logits(exported, SENTENCES[i:i + 1], longest=bool(SENTENCES[i]))
        assert np.abs(got - want[i:i + 1]).max() <= TOLERANCE
    assert "no torch, no aftpipe" in (exported / "README.md").read_text()


@pytest.mark.parametrize("student", ["tiny-transformer", "bow-mlp"])
def test_other_text_students_export(student, text_runs, tmp_path):
    run = tmp_path / student
    train(TrainConfig(dataset=f"tsv:{text_runs['data']}", student=student, method="none", epochs=1, batch_size=64,
                      threads=1, student_options=StudentConfig(vocab_size=200, embed_dim=16, width=16, max_length=16),
                      out=str(run)))
    r = export_model(run, tmp_path / "onnx")
    assert r.max_abs_diff <= TOLERANCE and r.rows == 64
    want = load_model(run).logits(SENTENCES)
    assert np.abs(onnx_logits(tmp_path / "onnx", SENTENCES, longest=True) - want).max() <= TOLERANCE


def test_a_pruned_pretrained_encoder_carries_its_id_map_into_the_graph(text_runs, tiny_hf_dir, tmp_path):
    from aftpipe.students import rebuild_student

    run = tmp_path / "hf"
    train(TrainConfig(dataset=f"tsv:{text_runs['data']}", student=f"hf:{tiny_hf_dir}", method="none", steps=3,
                      batch_size=32, threads=1, student_options=StudentConfig(max_length=16, prune_vocab=True),
                      out=str(run)))
    info = json.loads((run / "model.json").read_text())
    assert info["text"]["id_map"] is True  # tokenizer.json gives BERT's ids; the pruned table has other rows
    model = load_model(run)
    student = rebuild_student(json.loads((run / "student.json").read_text()))
    a, b = model.encode(SENTENCES), student.encode(SENTENCES)  # the folder's tokenizer encodes as the student does
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in ("input_ids", "attention_mask"))
    r = export_model(run, tmp_path / "onnx")
    assert r.max_abs_diff <= TOLERANCE
    assert np.abs(onnx_logits(tmp_path / "onnx", SENTENCES) - model.logits(SENTENCES)).max() <= TOLERANCE


def test_image_student_exports(image_run, tmp_path):
    from aftpipe.data import load_dataset

    r = export_model(image_run, tmp_path / "onnx")
    config = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert config["inputs"] == ["pixels"] and config["image"]["input_size"] == [1, 8, 8] and r.split == "test"
    model = load_model(image_run)
    images = [load_dataset("digits").split("test").inputs[i] for i in range(5)]
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"pixels": model.encode(images)["pixels"].numpy()})[0]
    assert np.abs(got - model.logits(images)).max() <= TOLERANCE


def test_an_existing_export_is_replaced_only_with_overwrite(exported, text_runs, tmp_path, cli, one_line_error):
    out = tmp_path / "onnx"
    shutil.copytree(exported, out)
    (out / "model.onnx").write_bytes(b"an older export")
    code, _, err = cli(["export", str(text_runs["student"]), "--out", str(out)])
    one_line_error(code, err, "already exists", "--overwrite")
    assert (out / "model.onnx").read_bytes() == b"an older export"
    code, stdout, err = cli(["export", str(text_runs["student"]), "--out", str(out), "--overwrite"])
    assert code == 0, err
    assert "match the torch student's within" in stdout and "on 64 rows of `test`" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "tokenizer.json"]
    assert (out / "model.onnx").read_bytes() != b"an older export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # no temporary or old folder left


def test_an_out_that_is_not_an_earlier_export_is_refused_even_with_overwrite(text_runs, tmp_path, cli, one_line_error,
                                                                             monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    monkeypatch.chdir(mine)
    run = str(text_runs["student"])
    for out, needle in ((".", "is the current folder or one above it"), ("..", "is the current folder or one above it"),
                        (str(mine), "is the current folder"), (str(tmp_path / "file"), "is a file"),
                        (run, "holds the run itself"), (f"{run}/exports", "is inside the run folder"),
                        (str(text_runs["store"] / "onnx"), "is inside the feature store")):
        code, _, err = cli(["export", run, "--out", out, "--overwrite"])
        one_line_error(code, err, needle)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["export", run, "--out", "mine", "--overwrite"])
    one_line_error(code, err, "holds no earlier export", "choose a new folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"] and os.listdir(mine) == ["keep.txt"]
    assert not (text_runs["student"] / "onnx").exists()


def test_a_successful_export_prints_one_line(text_runs, tmp_path):
    """The exporter's graph dump, progress lines and warnings (written by torch, some below Python) are kept
    from the user: the command prints its one summary line and nothing else."""
    env = {**os.environ, "PYTHONPATH": str(README.parent)}
    done = subprocess.run([sys.executable, "-m", "aftpipe", "export", str(text_runs["student"]), "--out",
                           str(tmp_path / "onnx")], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and len(done.stdout.splitlines()) == 1, (done.stdout, done.stderr[:2000])
    assert "match the torch student's within" in done.stdout


def test_refusals(text_runs, tmp_path, cli, one_line_error):
    code, _, err = cli(["export", str(text_runs["probe"]), "--out", str(tmp_path / "x")])
    one_line_error(code, err, "is a linear probe")
    code, _, err = cli(["export", str(tmp_path), "--out", str(tmp_path / "x")])
    one_line_error(code, err, "not a finished aftpipe run")
    code, _, err = cli(["export", str(text_runs["student"]), "--format", "tflite", "--out", str(tmp_path / "x")])
    one_line_error(code, err, "unknown --format `tflite`", "onnx")
    code, _, err = cli(["export", str(text_runs["student"]), "--out", str(text_runs["student"]), "--overwrite"])
    one_line_error(code, err, "holds the run itself")
    assert not (tmp_path / "x").exists()


def test_a_student_onnx_cannot_express_is_refused_naming_the_operator(text_runs, tmp_path, monkeypatch, cli,
                                                                       one_line_error):
    import torch

    from aftpipe.students.text import BowMLP

    run = tmp_path / "run"
    train(TrainConfig(dataset=f"tsv:{text_runs['data']}", student="bow-mlp", method="none", epochs=1, threads=1,
                      student_options=StudentConfig(vocab_size=200, embed_dim=16, width=16, max_length=16),
                      out=str(run)))
    plain = BowMLP.features
    monkeypatch.setattr(BowMLP, "features", lambda self, batch: torch.cummax(plain(self, batch), dim=1).values)
    code, _, err = cli(["export", str(run), "--out", str(tmp_path / "onnx")])
    one_line_error(code, err, "cannot be exported to ONNX", "`aten.cummax`", "nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_verification_writes_nothing(text_runs, tmp_path, monkeypatch):
    import aftpipe.export as ex

    real = ex._onnx_logits
    monkeypatch.setattr(ex, "_onnx_logits", lambda *a: [g + np.float32(2e-4) for g in real(*a)])
    with pytest.raises(AftpipeError, match=r"differ from the torch student's by up to 0\.0002.* on 64 rows of `test`"):
        export_model(text_runs["student"], tmp_path / "onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_extras_are_named(text_runs, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(AftpipeError, match=r"needs onnxscript; install them with `pip install 'aftpipe\[export\]'`"):
        export_model(text_runs["student"], tmp_path / "onnx")


# --- the README's example: ONNX Runtime + tokenizers + numpy, nothing else --------------------------------------
BLOCKER = '''
import sys

class Blocked:
    """Refuse the packages the README example promises not to need."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "aftpipe", "transformers"):
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Blocked())
'''


def readme_example() -> str:
    text = README.read_text()
    marker = text.index("<!-- onnx-no-torch example")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


def test_the_readme_example_runs_without_torch_and_agrees_with_predict(exported, text_runs, tmp_path, cli,
                                                                        monkeypatch):
    from aftpipe.model import ONNX_EXAMPLE

    code = readme_example()
    assert code == ONNX_EXAMPLE.format(folder="exports/sst2-aft")  # the exports' own cards show the same code
    assert len(code.strip().splitlines()) <= 25
    assert re.findall(r"^(?:import|from) (\w+)", code, re.M) == ["json", "numpy", "onnxruntime", "tokenizers"]
    code = code.replace('folder = "exports/sst2-aft"', f"folder = {str(exported)!r}")
    sentences = ["superb great film", "awful dull plot", "fine cast but boring", "good [SEP] bad"]
    code = re.sub(r"sentences = \[.*?\]\n", f"sentences = {sentences!r}\n", code, count=1)
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blocker")}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode != 0 and "torch is not installed here" in check.stderr  # the blocker works
    done = subprocess.run([sys.executable, "example.py"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    printed = [line.split(" ", 2) for line in done.stdout.strip().splitlines()]
    assert [s for _, _, s in printed] == sentences
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(sentences).encode())))
    status, out, err = cli(["predict", str(text_runs["student"]), "--input", "-"])
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [label for label, _, _ in printed] == [r["label"] for r in rows]
    assert [float(p) for _, p, _ in printed] == pytest.approx(
        [max(float(r["prob_neg"]), float(r["prob_pos"])) for r in rows], abs=2e-3)
