"""A finished run is a model folder: what it holds, `load_model`, `predict` / `predict_proba`, the card."""

import json
import pickle
import shlex
import shutil

import numpy as np
import pytest
import torch

from aftpipe import load_model
from aftpipe.config import TrainConfig, load_config
from aftpipe.data import load_dataset
from aftpipe.errors import AftpipeError
from aftpipe.evaluation import evaluate
from aftpipe.model import add_seed_summary
from aftpipe.store import open_features
from aftpipe.store.manifest import sha256_file


def test_a_finished_run_is_a_self_describing_folder_without_pickles(text_runs):
    run = text_runs["student"]
    assert {p.name for p in run.iterdir()} == {"config.yaml", "metrics.json", "metrics.jsonl", "model.json",
                                               "README.md", "student.safetensors", "student.json", "tokenizer.json"}
    info = json.loads((run / "model.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert info["kind"] == "student" and info["modality"] == "text" and info["student"] == "textcnn"
    assert info["labels"] == ["neg", "pos"]  # as the dataset's files name them
    assert info["weights"]["sha256"] == sha256_file(run / "student.safetensors")
    assert info["params"] == metrics["params"] and info["test"] == metrics["test"]
    assert info["method"] == {"name": "aft", "beta": 0.5}
    assert info["text"]["max_length"] == 16 and info["text"]["inputs"] == ["input_ids", "attention_mask"]
    [src] = info["sources"]
    assert src["weights_sha256"] == open_features(text_runs["store"]).source["weights_sha256"] != {}
    card = (run / "README.md").read_text()
    for needle in ("`aft`, β = 0.5", f"{info['params']:,}", f"{metrics['test']['accuracy']:.4f}", "`neg`, `pos`",
                   next(iter(src["weights_sha256"].values())), info["command"], "with every label"):
        assert needle in card, needle


def test_the_cards_command_trains_the_same_model(text_runs, tmp_path, cli):
    info = json.loads((text_runs["student"] / "model.json").read_text())
    args = shlex.split(info["command"])
    assert args[:2] == ["aftpipe", "train"]
    args[args.index("--out") + 1] = str(tmp_path / "again")
    code, _, err = cli([*args[1:], "--quiet"])
    assert code == 0, err
    assert load_config(TrainConfig, tmp_path / "again" / "config.yaml").to_dict() == {
        **load_config(TrainConfig, text_runs["student"] / "config.yaml").to_dict(), "out": str(tmp_path / "again")}
    again = json.loads((tmp_path / "again" / "model.json").read_text())
    assert again["weights"]["sha256"] == info["weights"]["sha256"]


def test_predict_on_the_test_split_reproduces_evaluate(text_runs):
    run = text_runs["student"]
    model = load_model(run)
    test = load_dataset(f"tsv:{text_runs['data']}").split("test")
    labels = model.predict(list(test.inputs))
    assert set(labels) <= {"neg", "pos"}
    truth = [("neg", "pos")[y] for y in test.labels]
    assert np.mean([a == b for a, b in zip(labels, truth)]) == evaluate(run)["accuracy"]
    p = model.predict_proba(list(test.inputs))
    assert p.shape == (len(test), 2) and p.dtype == np.float32 and np.allclose(p.sum(1), 1, atol=1e-6)
    assert [model.labels[i] for i in p.argmax(1)] == labels
    # the batch size changes nothing but speed
    assert np.allclose(model.predict_proba(list(test.inputs), batch_size=1), p, atol=1e-6)


def test_the_folder_needs_neither_the_teachers_tokenizer_nor_pickles(text_runs, monkeypatch):
    import aftpipe.students.tokenizer as tk

    texts = ["good great film", "awful boring plot", "[SEP] fine [CLS]", ""]
    want = load_model(text_runs["student"]).predict_proba(texts)

    def refuse(*args, **kwargs):
        raise AssertionError("loading a model folder must not need this")

    monkeypatch.setattr(tk, "_minilm_tokenizer", refuse)
    monkeypatch.setattr(tk, "_wordpiece", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert np.array_equal(load_model(text_runs["student"]).predict_proba(texts), want)


def test_tokenizer_json_encodes_as_the_student_does(text_runs):
    from aftpipe.students import rebuild_student

    run = text_runs["student"]
    student = rebuild_student(json.loads((run / "student.json").read_text()))
    model = load_model(run)
    texts = list(load_dataset(f"tsv:{text_runs['data']}").split("train").inputs)
    texts += ["[SEP] [PAD] [UNK] x", "naïve café ☃ 日本語", "", "superb " * 40]
    a, b = model.encode(texts), student.encode(texts)
    assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask"))


def test_image_model_takes_paths_pil_images_and_arrays(image_run, tmp_path):
    from PIL import Image

    info = json.loads((image_run / "model.json").read_text())
    assert info["modality"] == "image" and info["labels"] == [str(d) for d in range(10)]
    assert info["image"]["input_size"] == [1, 8, 8] and info["image"]["mean"] == [0.5]
    model = load_model(image_run)
    test = load_dataset("digits").split("test")
    arrays = [test.inputs[i] for i in range(len(test))]
    pred = model.predict(arrays)
    assert np.mean([p == str(y) for p, y in zip(pred, test.labels)]) == evaluate(image_run)["accuracy"]
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(arrays[i]).save(paths[i])
    from_files = model.predict_proba([str(p) for p in paths])  # opened as RGB, as imagefolder datasets are
    from_pil = model.predict_proba([Image.open(p).convert("RGB") for p in paths])
    assert np.array_equal(from_files, from_pil)
    assert np.allclose(from_files, model.predict_proba(arrays[:5]), atol=1e-5)  # RGB → luma: the same pixels


def test_the_linear_probe_runs_its_foundation_model(text_runs):
    from aftpipe.features import open_split_features
    from aftpipe.probe import load_head, predict_head

    run = text_runs["probe"]
    info = json.loads((run / "model.json").read_text())
    assert info["kind"] == "linear_probe" and "student" not in info and info["labels"] == ["neg", "pos"]
    model = load_model(run)
    dataset = load_dataset(f"tsv:{text_runs['data']}")
    test = dataset.split("test")
    live = model.predict(list(test.inputs))
    cached = predict_head(load_head(run), open_split_features((str(text_runs["store"]),), dataset, "test"),
                          np.arange(len(test)))
    # φ recomputed in float32 vs read from the float16 store: the same predictions up to rounding
    assert np.mean([a == ("neg", "pos")[b] for a, b in zip(live, cached)]) >= 0.97
    assert "needs its foundation model" in (run / "README.md").read_text()


def test_a_probe_whose_foundation_weights_changed_is_refused(text_runs, tmp_path):
    run = tmp_path / "probe"
    shutil.copytree(text_runs["probe"], run)
    info = json.loads((run / "model.json").read_text())
    info["sources"][0]["weights_sha256"] = {"model.safetensors": "0" * 64}
    (run / "model.json").write_text(json.dumps(info))
    with pytest.raises(AftpipeError, match="not the ones the probe .* was fitted on"):
        load_model(run)


@pytest.mark.parametrize("damage, needle", [
    (lambda r: (r / "metrics.json").unlink(), "not a finished aftpipe run"),
    (lambda r: (r / "student.safetensors").unlink(), "student.safetensors is missing"),
    (lambda r: (r / "student.safetensors").write_bytes((r / "student.safetensors").read_bytes()[:1000]), "truncated"),
    (lambda r: (r / "student.safetensors").write_bytes(
        (lambda b: b[:-4] + bytes(4 * [0x5a]))((r / "student.safetensors").read_bytes())), "is corrupt"),
    (lambda r: (r / "tokenizer.json").write_text("{"), "tokenizer.json is not the file this model was trained with"),
    (lambda r: (r / "model.json").unlink(), "no model.json"),
])
def test_a_damaged_folder_is_refused_with_one_line(text_runs, tmp_path, damage, needle):
    run = tmp_path / "run"
    shutil.copytree(text_runs["student"], run)
    damage(run)
    with pytest.raises(AftpipeError, match=needle) as e:
        load_model(run)
    assert "\n" not in str(e.value)


def test_bad_calls(text_runs, tmp_path):
    with pytest.raises(AftpipeError, match="no run directory"):
        load_model(tmp_path / "nope")
    model = load_model(text_runs["student"])
    with pytest.raises(AftpipeError, match=r"must be a list.*predict\(\[x\]\)"):
        model.predict("good film")
    with pytest.raises(AftpipeError, match="takes texts, but input 1 is a int"):
        model.predict(["good", 3])
    assert model.predict_proba([]).shape == (0, 2)


def test_seed_summary_goes_into_the_card_once(text_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(text_runs["student"], run)
    add_seed_summary([run], "accuracy", [0.8, 0.9, 0.85], [0, 1, 2])
    card = (run / "README.md").read_text()
    assert "| test accuracy over seeds | 0.8500 ± 0.0500 (seeds 0, 1, 2, same settings) |" in card
    assert json.loads((run / "model.json").read_text())["across_seeds"]["std"] == pytest.approx(0.05)
    assert load_model(run).labels == ["neg", "pos"]  # the summary is provenance: the folder's binding still holds
    stamp = (run / "README.md").stat().st_mtime_ns, (run / "model.json").stat().st_mtime_ns
    add_seed_summary([run], "accuracy", [0.8, 0.9, 0.85], [0, 1, 2])
    assert ((run / "README.md").stat().st_mtime_ns, (run / "model.json").stat().st_mtime_ns) == stamp


def edit_model_json(run, edit):
    info = json.loads((run / "model.json").read_text())
    edit(info)
    (run / "model.json").write_text(json.dumps(info))


def rebind(info):
    """What a hand edit that also rewrote the file hashes would leave: a binding that matches its fields."""
    from aftpipe.model import binding

    info["binding"] = binding(info)


@pytest.mark.parametrize("edit, needle", [
    (lambda i: i.pop("labels"), "`labels` is missing"),
    (lambda i: i.pop("weights"), "`weights` is missing"),
    (lambda i: i["weights"].pop("sha256"), "`weights.sha256` is missing"),
    (lambda i: i.update(kind="teacher"), "`kind` must be one of student, linear_probe, got 'teacher'"),
    (lambda i: i.update(labels="neg,pos"), "`labels` must be a list"),
    (lambda i: i.update(labels=["neg"]), "`labels` must list 2 or more"),
    (lambda i: i.update(labels=["neg", "neg"]), "`labels` must be distinct"),
    (lambda i: i["text"].update(max_length=0), "`text.max_length` must be an integer ≥ 1, got 0"),
    (lambda i: i["text"].update(max_length="16"), "`text.max_length` must be an integer ≥ 1"),
    (lambda i: i["text"].update(pad_id=-1), "`text.pad_id` must be an integer ≥ 0, got -1"),
    (lambda i: i["weights"].update(bytes=True), "`weights.bytes` must be an integer ≥ 1"),
    (lambda i: i["weights"].update(sha256="abc"), "`weights.sha256` must be a sha256"),
    (lambda i: i.update(params=-3), "`params` must be an integer ≥ 1, got -3"),
    (lambda i: i.pop("text"), "`text` is missing"),
    (lambda i: i.update(version=7), "`version` is 7, this aftpipe reads 2"),
    (lambda i: i.update(binding="0" * 64), "was edited after training"),
    (lambda i: i.update(labels=["neg", "pos", "other"]), "was edited after training"),
    (lambda i: (i["weights"].update(file="../other/student.safetensors"), rebind(i)),
     "`weights.file` must name a file inside the folder"),
    (lambda i: (i["weights"].update(file="/etc/passwd"), rebind(i)), "must name a file inside the folder"),
    (lambda i: (i.pop("version"), i.update(format=1)), "written by an older aftpipe (format 1)"),
    (lambda i: i.update(text=[16]), "`text` must be an object"),
    (lambda i: i["text"].update(id_map=1), "`text.id_map` must be true or false, got 1"),
])
def test_a_damaged_model_json_is_one_line_naming_the_field(text_runs, tmp_path, edit, needle):
    run = tmp_path / "run"
    shutil.copytree(text_runs["student"], run)
    edit_model_json(run, edit)
    with pytest.raises(AftpipeError) as e:
        load_model(run)
    msg = str(e.value)
    assert "\n" not in msg and "--overwrite" in msg, msg
    assert needle is None or needle in msg, msg


def test_a_model_json_that_is_not_an_object_is_refused(text_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(text_runs["student"], run)
    (run / "model.json").write_text("[1, 2]")
    with pytest.raises(AftpipeError, match="model.json is damaged: it must hold a JSON object, not a list"):
        load_model(run)
    assert load_model(text_runs["student"]).spec.labels == ("neg", "pos")


def test_a_model_json_rebound_by_hand_still_fails_on_its_weights(text_runs, tmp_path):
    """Three labels over a 2-class head, with the binding recomputed: the head's shape refuses it."""
    run = tmp_path / "run"
    shutil.copytree(text_runs["student"], run)
    edit_model_json(run, lambda i: (i.update(labels=["neg", "pos", "other"]), rebind(i)))
    with pytest.raises(AftpipeError, match="3 labels, but its weights give 2 classes"):
        load_model(run)


def test_files_from_another_run_or_outside_the_folder_are_refused(text_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(text_runs["student"], run)
    tok = json.loads((run / "tokenizer.json").read_text())
    tok["model"]["vocab"] = dict(reversed(list(tok["model"]["vocab"].items())))  # a tokenizer that encodes otherwise
    (run / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(AftpipeError, match="tokenizer.json is not the file this model was trained with"):
        load_model(run)
    shutil.copyfile(text_runs["student"] / "tokenizer.json", run / "tokenizer.json")
    # a weights file swapped in together with its size and hash: the binding no longer matches
    w = run / "student.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"ZZZZ")
    edit_model_json(run, lambda i: i["weights"].update(sha256=sha256_file(w)))
    with pytest.raises(AftpipeError, match="was edited after training"):
        load_model(run)
    shutil.copyfile(text_runs["student"] / "student.safetensors", w)
    shutil.copyfile(text_runs["student"] / "model.json", run / "model.json")
    # a symlink that leads out of the folder, to a copy of the very same file, is refused all the same
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copyfile(w, outside)
    w.unlink()
    w.symlink_to(outside)
    with pytest.raises(AftpipeError, match="leads out of the model folder"):
        load_model(run)
    with pytest.raises(AftpipeError, match="student saved in .* cannot be loaded .*leads out of the model folder"):
        evaluate(run)
