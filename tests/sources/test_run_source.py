"""`model:<run dir>`: a finished run as a feature source (a fine-tuned teacher for distillation)."""

import numpy as np
import pytest
import torch

from aftpipe.config import ExtractConfig
from aftpipe.data import load_dataset
from aftpipe.errors import AftpipeError
from aftpipe.extraction import extract
from aftpipe.model import load_model
from aftpipe.sources import check_source, load_source, store_name
from aftpipe.store import open_features


def test_the_store_holds_the_runs_penultimate_features_and_its_head_reproduces_its_predictions(text_runs, tmp_path):
    run, data = text_runs["student"], text_runs["data"]
    extract(ExtractConfig(dataset=f"tsv:{data}", sources=(f"model:{run}",), cache_dir=str(tmp_path), name="reviews", workers=0,
                          dtype="float32"))
    store = open_features(tmp_path / "reviews" / store_name(f"model:{run}"))
    test = store.split("test")
    rows = np.asarray(test[np.arange(test.shape[0])])
    texts = load_dataset(f"tsv:{data}").split("test").inputs
    texts = [texts[i] for i in test.index]

    model = load_model(run)
    with torch.inference_mode():
        ref = model.net.features(model.encode(texts)).numpy()
    np.testing.assert_allclose(rows, ref, atol=1e-5)
    # the run's own classifier on the stored rows predicts what the run predicts: these are its features
    with torch.inference_mode():
        pred = model.net.head(torch.from_numpy(rows)).argmax(1).numpy()
    assert [model.labels[i] for i in pred] == model.predict(texts)

    src = store.source
    assert src["library"] == "aftpipe" and src["path"] == str(run.resolve())
    assert src["weights_sha256"] == {"student.safetensors": model.spec.weights.sha256}
    assert src["trained_on"]["method"]["name"] == "aft" and src["dim"] == rows.shape[1]


def test_image_runs_are_sources_too(image_run):
    src = load_source(f"model:{image_run}")
    assert src.modality == "image"
    images = list(load_dataset("digits").split("test").inputs[:5])
    out = src.forward(src.collate(images))
    assert out.shape == (5, src.dim) and torch.isfinite(out).all()


def test_what_is_not_a_student_run_is_refused_with_one_line(text_runs, tmp_path):
    with pytest.raises(AftpipeError, match="is a linear probe, whose features are its foundation model's"):
        check_source(f"model:{text_runs['probe']}")
    with pytest.raises(AftpipeError, match="no run directory at"):
        check_source(f"model:{tmp_path / 'nowhere'}")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(AftpipeError, match="is not a finished aftpipe run"):
        load_source(f"model:{unfinished}")


def test_extract_from_a_probe_run_exits_with_one_line(text_runs, cli, one_line_error):
    code, out, err = cli(["extract", "--dataset", f"tsv:{text_runs['data']}", "--source", f"model:{text_runs['probe']}",
                          "--cache-dir", str(text_runs["data"].parent / "never")])
    one_line_error(code, err, "linear probe")
    assert not (text_runs["data"].parent / "never").exists()


def test_a_teacher_whose_files_were_swapped_is_refused(text_runs, tmp_path):
    import shutil

    run = tmp_path / "teacher"
    shutil.copytree(text_runs["student"], run)
    (run / "tokenizer.json").write_text((run / "tokenizer.json").read_text().replace('"[UNK]"', '"[unk]"', 1))
    with pytest.raises(AftpipeError, match="tokenizer.json is not the file this model was trained with"):
        load_source(f"model:{run}")


def test_a_teacher_retrained_after_extraction_is_noticed_by_train_and_verify(text_runs, tmp_path, cli):
    import dataclasses
    import shutil

    from aftpipe.config import TrainConfig, load_config
    from aftpipe.training import train

    teacher, data = tmp_path / "teacher", text_runs["data"]
    shutil.copytree(text_runs["student"], teacher)
    extract(ExtractConfig(dataset=f"tsv:{data}", sources=(f"model:{teacher}",), cache_dir=str(tmp_path / "c"),
                          name="reviews", workers=0))
    store = tmp_path / "c" / "reviews" / "model-teacher"
    train_args = ["train", "--dataset", f"tsv:{data}", "--features", str(store), "--student", "bow-mlp", "--steps", "2",
                  "--threads", "1", "--quiet"]
    code, _, err = cli([*train_args, "--out", str(tmp_path / "before")])
    assert code == 0, err  # the teacher as extracted: fine
    code, out, err = cli(["verify", str(store)])
    assert code == 0 and out.startswith("ok:"), err
    cfg = load_config(TrainConfig, teacher / "config.yaml")
    train(dataclasses.replace(cfg, seed=1, epochs=1, out=str(teacher), overwrite=True))  # retrained in place
    code, _, err = cli([*train_args, "--out", str(tmp_path / "after")])
    assert code == 2 and f"holds the features of teacher {teacher.resolve()}" in err and "--overwrite" in err, err
    assert not (tmp_path / "after").exists()
    code, _, err = cli(["verify", str(store)])
    assert code == 1 and "has changed since" in err and f"--source model:{teacher.resolve()} --overwrite" in err, err

