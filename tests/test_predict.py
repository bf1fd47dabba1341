"""`aftpipe predict`: every input format, the CSV it writes, and bad input (one line, exit 2, nothing written)."""

import csv
import io
import json
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aftpipe import load_model
from aftpipe.data import load_dataset
from aftpipe.evaluation import evaluate
from aftpipe.predict import predict_file


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_a_tsv_writes_labels_and_probabilities_and_scores_the_labelled_rows(text_runs, tmp_path, cli):
    run, test_file = text_runs["student"], text_runs["data"] / "test.tsv"
    code, out, err = cli(["predict", str(run), "--input", str(test_file), "--output", str(tmp_path / "p.csv")])
    assert code == 0 and out == "", err
    rows = read_csv(tmp_path / "p.csv")
    assert list(rows[0]) == ["id", "label", "prob_neg", "prob_pos"]
    assert [r["id"] for r in rows] == [f"test.tsv:{i}" for i in range(2, 2 + len(rows))]  # line numbers
    texts = list(load_dataset(f"tsv:{text_runs['data']}").split("test").inputs)
    assert [r["label"] for r in rows] == load_model(run).predict(texts)
    probs = np.array([[float(r["prob_neg"]), float(r["prob_pos"])] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    # the file has the label column: the run's metric on it is evaluate's, exactly
    acc = evaluate(run)["accuracy"]
    assert f"accuracy {acc:.4f} on the {len(rows)} labelled rows" in err


def test_every_input_format_gives_the_same_predictions(text_runs, tmp_path, cli, monkeypatch):
    run = text_runs["student"]
    lines = (text_runs["data"] / "test.tsv").read_text().splitlines()[1:]
    texts = [ln.split("\t")[0] for ln in lines]
    (tmp_path / "in.csv").write_text("id,body\n" + "".join(f"{i},\"{t}\"\n" for i, t in enumerate(texts)))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"content": t}) + "\n" for t in texts))
    pq.write_table(pa.table({"sentence": texts}), tmp_path / "in.parquet")
    want = load_model(run).predict(texts)
    for name, extra in (("in.csv", ["--text-col", "body"]), ("in.jsonl", []), ("in.parquet", [])):
        code, out, err = cli(["predict", str(run), "--input", str(tmp_path / name), *extra])
        assert code == 0, err
        assert [r["label"] for r in csv.DictReader(io.StringIO(out))] == want, name  # no --output: stdout
        assert "labelled" not in err  # no label column, no score
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(texts) + "\n").encode())))
    code, out, err = cli(["predict", str(run), "--input", "-"])
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["label"] for r in rows] == want and rows[0]["id"] == "stdin:1", err


def test_images_that_do_not_decode_are_skipped_or_refused(image_run, tmp_path, cli, one_line_error):
    from PIL import Image

    folder = tmp_path / "imgs"
    (folder / "a").mkdir(parents=True)
    test = load_dataset("digits").split("test")
    for i in range(6):
        Image.fromarray(test.inputs[i]).save(folder / ("a" if i % 2 else ".") / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "p.csv"
    code, _, err = cli(["predict", str(image_run), "--input", str(folder), "--output", str(out)])
    assert code == 0, err
    assert "skipped 1 unreadable image: broken.jpg" in err
    rows = read_csv(out)
    assert [r["id"] for r in rows] == ["0.png", "2.png", "4.png", "a/1.png", "a/3.png", "a/5.png"]
    assert [r["label"] for r in rows] == load_model(image_run).predict(
        [str(folder / r["id"]) for r in rows])
    assert list(rows[0])[2:] == [f"prob_{d}" for d in range(10)]
    before = out.read_bytes()
    code, _, err = cli(["predict", str(image_run), "--input", str(folder), "--output", str(out), "--strict",
                        "--overwrite"])
    one_line_error(code, err, "broken.jpg is not a readable image", "--strict")
    assert out.read_bytes() == before  # the earlier predictions are untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, needles", [
    (lambda d: _write(d / "x.tsv", b"sentence_id\tbody\n1\tgood\n"), ["no text column", "`sentence_id`, `body`",
                                                                       "--text-col"]),
    (lambda d: _write(d / "x.tsv", b""), ["is empty"]),
    (lambda d: _write(d / "x.tsv", b"text\n"), ["no rows"]),
    (lambda d: _write(d / "x.jsonl", b""), ["is empty"]),
    (lambda d: _write(d / "x.tsv", b"text\ngood film\ncaf\xe9 au lait\n"), ["x.tsv line 3 is not UTF-8"]),
    (lambda d: _write(d / "x.txt", b"text\ngood\n"), ["cannot read `.txt` files"]),
    (lambda d: _write(d / "x.parquet", b"PAR1 nope"), ["not a readable Parquet file"]),
    (lambda d: d / "missing.tsv", ["does not exist"]),
    (lambda d: d, ["is a folder", "takes text"]),
])
def test_bad_input_is_one_line_and_writes_nothing(text_runs, tmp_path, cli, one_line_error, make, needles):
    data = tmp_path / "in"
    data.mkdir()
    path = make(data)
    out = tmp_path / "p.csv"
    code, _, err = cli(["predict", str(text_runs["student"]), "--input", str(path), "--output", str(out)])
    one_line_error(code, err, *needles)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_bad_runs_and_outputs(text_runs, tmp_path, cli, one_line_error, monkeypatch):
    test_file = str(text_runs["data"] / "test.tsv")
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text("dataset: sst2\n")
    code, _, err = cli(["predict", str(tmp_path / "unfinished"), "--input", test_file])
    one_line_error(code, err, "not a finished aftpipe run")
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = cli(["predict", str(text_runs["student"]), "--input", test_file, "--output",
                        str(blocker / "p.csv")])
    one_line_error(code, err, "cannot write --output", "writable folder")
    code, _, err = cli(["predict", str(text_runs["student"]), "--input", test_file, "--output", str(tmp_path)])
    one_line_error(code, err, "is a folder")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _, err = cli(["predict", str(text_runs["student"]), "--input", "-"])
    one_line_error(code, err, "stdin is empty")
    run = tmp_path / "run"
    shutil.copytree(text_runs["student"], run)
    (run / "student.safetensors").write_bytes((run / "student.safetensors").read_bytes()[:100])
    code, _, err = cli(["predict", str(run), "--input", test_file, "--output", str(tmp_path / "p.csv")])
    one_line_error(code, err, "student.safetensors is truncated")
    assert not (tmp_path / "p.csv").exists()


def test_predict_file_api_reports_what_it_did(text_runs, tmp_path):
    r = predict_file(text_runs["student"], str(text_runs["data"] / "test.tsv"), tmp_path / "p.csv", batch_size=7)
    assert r.rows == r.labelled == 80 and r.output == tmp_path / "p.csv" and not r.skipped
    assert r.scores == evaluate(text_runs["student"])


def test_predict_never_replaces_what_it_did_not_write(text_runs, tmp_path, cli, one_line_error):
    run = tmp_path / "run"
    shutil.copytree(text_runs["student"], run)
    inp = tmp_path / "in.tsv"
    shutil.copyfile(text_runs["data"] / "test.tsv", inp)
    kept = {p: p.read_bytes() for p in (inp, run / "metrics.json")}
    for target, needle in ((inp, "is the input file"), (run / "metrics.json", "inside the run folder"),
                           (run / "new.csv", "inside the run folder")):
        code, _, err = cli(["predict", str(run), "--input", str(inp), "--output", str(target), "--overwrite"])
        one_line_error(code, err, needle)
    assert {p: p.read_bytes() for p in kept} == kept and not (run / "new.csv").exists()
    # an existing file is replaced only when --overwrite says so
    out = tmp_path / "p.csv"
    out.write_text("mine\n")
    code, _, err = cli(["predict", str(run), "--input", str(inp), "--output", str(out)])
    one_line_error(code, err, "already exists", "--overwrite")
    assert out.read_text() == "mine\n"
    code, _, err = cli(["predict", str(run), "--input", str(inp), "--output", str(out), "--overwrite"])
    assert code == 0 and read_csv(out)[0]["id"] == "in.tsv:2", err


def test_output_dash_is_stdout(text_runs, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["predict", str(text_runs["student"]), "--input", str(text_runs["data"] / "test.tsv"),
                          "--output", "-"])
    assert code == 0 and out.startswith("id,label,prob_neg,prob_pos\n"), err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def decimal_label_run(tmp_path_factory):
    """A run on a dataset whose labels are written `1.0` and `2.0`: names that look like numbers."""
    from aftpipe.config import TrainConfig
    from aftpipe.students import StudentConfig
    from aftpipe.training import train

    root = tmp_path_factory.mktemp("decimal-labels")
    for split, n in (("train", 60), ("test", 20)):
        rows = ["text\tlabel"] + [f"{('bad dull', 'good fine')[i % 2]} film {i}\t{('1.0', '2.0')[i % 2]}" for i in range(n)]
        (root / "data" / f"{split}.tsv").parent.mkdir(exist_ok=True)
        (root / "data" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    train(TrainConfig(dataset=f"tsv:{root / 'data'}", method="none", student="bow-mlp", steps=20, threads=1,
                      student_options=StudentConfig(vocab_size=200, embed_dim=16, width=16), out=str(root / "run")))
    return root / "run"


def test_labels_are_matched_by_their_names_as_written(decimal_label_run, tmp_path):
    from aftpipe.predict import label_ids

    assert load_model(decimal_label_run).labels == ["1.0", "2.0"]
    as_written = tmp_path / "as-written.tsv"
    as_written.write_text("text\tlabel\ngood fine film\t2.0\nbad dull film\t1.0\n")
    r = predict_file(decimal_label_run, str(as_written), tmp_path / "a.csv")
    assert r.labelled == 2
    # `1` and `2` are neither label: not class indices 1 and 2 (nor 0 and 1)
    indices = tmp_path / "indices.tsv"
    indices.write_text("text\tlabel\ngood fine film\t1\nbad dull film\t0\n")
    r = predict_file(decimal_label_run, str(indices), tmp_path / "b.csv")
    assert r.labelled == 0 and r.scores is None
    # the rule itself: names exactly; integers only for a model whose labels are integers; the files' own cells
    assert label_ids(["1.0", "1", "2.0", None, " 2.0"], ["1.0", "2.0"]).tolist() == [0, -1, 1, -1, -1]
    assert label_ids(["0", "1", " 1", "+1", "1.0", "2", "+-1", "1_0"], [0, 1]).tolist() == [0, 1, 1, 1, -1, -1, -1, -1]
    assert label_ids(["Billing", "billing"], ["billing", "other"]).tolist() == [-1, 0]
    assert label_ids(["0", "1", "positive"], ["negative", "positive"], ["0", "1"]).tolist() == [0, 1, 1]


def test_an_image_too_large_to_decode_is_skipped_or_refused(image_run, tmp_path, cli, one_line_error):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(load_dataset("digits").split("test").inputs[0]).save(folder / "small.png")
    Image.new("1", (20000, 10000)).save(folder / "huge.png")  # 200 M pixels in 25 kB: a decompression bomb
    code, out, err = cli(["predict", str(image_run), "--input", str(folder)])
    assert code == 0 and "skipped 1 unreadable image: huge.png" in err, err
    assert [r["id"] for r in csv.DictReader(io.StringIO(out))] == ["small.png"]
    code, _, err = cli(["predict", str(image_run), "--input", str(folder), "--strict"])
    one_line_error(code, err, "huge.png is too large to decode safely", "--strict")


def test_negative_threads_are_refused(text_runs, cli, one_line_error):
    code, _, err = cli(["predict", str(text_runs["student"]), "--input", str(text_runs["data"] / "test.tsv"),
                        "--threads", "-2"])
    one_line_error(code, err, "--threads must be ≥ 1, got -2")


def test_include_text_and_json_lines(text_runs, tmp_path, cli, monkeypatch):
    run, test_file = text_runs["student"], text_runs["data"] / "test.tsv"
    texts = [ln.split("\t")[0] for ln in test_file.read_text().splitlines()[1:]]
    code, _, err = cli(["predict", str(run), "--input", str(test_file), "-o", str(tmp_path / "p.csv"), "--include-text"])
    assert code == 0, err
    rows = read_csv(tmp_path / "p.csv")
    assert list(rows[0]) == ["id", "text", "label", "prob_neg", "prob_pos"] and [r["text"] for r in rows] == texts
    code, _, err = cli(["predict", str(run), "--input", str(test_file), "-o", str(tmp_path / "p.jsonl"),
                        "--include-text"])
    assert code == 0, err
    objs = [json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [o["id"] for o in objs] == [r["id"] for r in rows] and [o["text"] for o in objs] == texts
    assert [o["label"] for o in objs] == [r["label"] for r in rows]
    for o, r in zip(objs, rows):
        assert list(o) == ["id", "text", "label", "score", "probs"] and list(o["probs"]) == ["neg", "pos"]
        assert o["probs"]["neg"] == float(r["prob_neg"]) and o["score"] == max(o["probs"].values())
        assert o["probs"][o["label"]] == o["score"]
    # stdout stays CSV unless --format jsonl; blank lines are skipped and counted
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"good great film\n\n  \nawful plot\n")))
    code, out, err = cli(["predict", str(run), "--input", "-", "--format", "jsonl"])
    assert code == 0 and "skipped 2 blank lines" in err, err
    assert [json.loads(ln)["id"] for ln in out.splitlines()] == ["stdin:1", "stdin:4"]
    assert "label" in json.loads(out.splitlines()[0]) and "text" not in json.loads(out.splitlines()[0])


def test_unknown_labels_are_counted_and_named_not_dropped(text_runs, tmp_path, cli, one_line_error, monkeypatch):
    run = text_runs["student"]
    f = tmp_path / "tickets.tsv"
    f.write_text("text\tlabel\ngood great film\tpos\nawful plot\tneg\nfine cast\tPos\nbad plot\tother\n"
                 "dull film\tPos\n\t\n   \tneg\n")
    r = predict_file(run, str(f), tmp_path / "p.csv")
    assert r.rows == 5 and r.labelled == 2 and r.unknown == {"Pos": 2, "other": 1} and r.blank == 2
    code, _, err = cli(["predict", str(run), "--input", str(f)])
    assert code == 0, err
    assert ("on the 2 labelled rows; 3 rows with labels the model does not know (Pos: 2, other: 1) left out"
            in err), err
    assert "skipped 2 blank texts" in err
    f.write_text("text\tlabel\ngood\tPositive\nbad\tNegative\n")
    code, _, err = cli(["predict", str(run), "--input", str(f)])
    assert code == 0, err
    assert "no score: 2 rows with labels the model does not know (Positive: 1, Negative: 1) left out (the model's " \
           "labels: neg, pos)" in err, err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n \n")))
    code, _, err = cli(["predict", str(run), "--input", "-"])
    one_line_error(code, err, "every one of the 2 texts in stdin is blank")
