"""Which split a dataset is scored on: the dataset says so itself, whatever it is called or however it is loaded."""

import datasets  # the `hub` extra, installed by `make setup`
import numpy as np
import pytest

from aftpipe.config import DatasetOptions, TrainConfig
from aftpipe.data import load_dataset
from aftpipe.errors import AftpipeError
from aftpipe.training import load_run_data

SST2_VIEWS = DatasetOptions(views=2)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_glue_datasets_are_scored_on_dev_with_or_without_views():
    plain = load_dataset("sst2")
    assert plain.test().name == "dev"
    views = load_dataset("sst2", options=SST2_VIEWS)
    assert views.name == "sst2-views2" and views.test().name == "dev" and len(views.test()) == len(plain.test())


def test_a_views_run_on_sst2_finds_its_test_split():
    cfg = TrainConfig(dataset="sst2", method="none", out="unused", dataset_options=SST2_VIEWS, labels=100)
    data = load_run_data(cfg)
    assert data.test.name == "dev" and len(data.test) == 872


def test_a_saved_hf_folder_named_sst2_is_scored_on_the_split_it_maps_to_test(tmp_path):
    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    parts = {name: datasets.Dataset.from_dict({"sentence": [f"film {name} {i}" for i in range(n)],
                                               "label": rng.integers(0, 2, n).tolist()})
             for name, n in (("train", 30), ("validation", 10))}
    folder = tmp_path / "sst2"  # the name GLUE's local copy also has: it must not decide the test split
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    options = DatasetOptions(split_map={"train": "train", "validation": "test"})
    cfg = TrainConfig(dataset=f"hf:{folder}", method="none", out="unused", dataset_options=options)
    data = load_run_data(cfg)
    assert data.test.name == "test" and data.test.ids[0] == "test:0" and len(data.test) == 10


def test_an_explicit_test_split_wins_and_a_missing_one_names_the_fixes(tmp_path):
    folder = tmp_path / "d"
    write(folder / "train.tsv", "text\tlabel\na\t0\nb\t1\n")
    write(folder / "valid.tsv", "text\tlabel\nc\t0\nd\t1\n")
    ds = load_dataset(f"tsv:{folder}")
    assert ds.test("valid").name == "valid"
    with pytest.raises(AftpipeError, match="has no split `test` to test on .*test_split=NAME"):
        ds.test()


# --- a test split held out of a single file -------------------------------------------------------------------
def one_file(tmp_path, n=100, name="one.tsv"):
    """n rows, classes a/b/c in proportions 6:3:1, and two unlabelled rows."""
    rows = [f"row {i} text\t{'aaaaaabbbc'[i % 10]}" for i in range(n)] + ["no label here\t", "nor here\t"]
    return write(tmp_path / name, "text\tlabel\n" + "\n".join(rows) + "\n")


def test_a_single_file_gets_a_stratified_seeded_test_split_by_default(tmp_path):
    ds = load_dataset(f"tsv:{one_file(tmp_path)}")
    train, test = ds.split("train"), ds.test()
    assert list(ds.splits) == ["train", "test"] and test.name == "test" and ds.test_split == "test"
    assert np.bincount(test.labels).tolist() == [12, 6, 2]  # 20% of each class
    assert (test.labels >= 0).all() and (train.labels == -1).sum() == 2  # unlabelled rows stay in train
    assert not set(train.ids) & set(test.ids) and len(train) + len(test) == 102
    assert test.ids == sorted(test.ids, key=lambda i: int(i.split(":")[1]))  # the file's order
    assert ds.info["test_split"] == {"from": "train", "fraction": 0.2, "seed": 0, "rows": 20}
    again = load_dataset(f"tsv:{one_file(tmp_path)}")
    assert again.test().ids == test.ids  # the same rows every time
    other = load_dataset(f"tsv:{one_file(tmp_path)}", options=DatasetOptions(split_seed=1))
    assert other.test().ids != test.ids and np.bincount(other.test().labels).tolist() == [12, 6, 2]
    third = load_dataset(f"tsv:{one_file(tmp_path)}", options=DatasetOptions(test_fraction=0.3))
    assert len(third.test()) == 30 and third.info["test_split"]["fraction"] == 0.3


def test_the_held_out_rows_are_the_same_in_every_format(tmp_path):
    tsv = load_dataset(f"tsv:{one_file(tmp_path)}")
    import pandas as pd

    frame = pd.read_csv(one_file(tmp_path), sep="\t", keep_default_na=False)
    frame.to_json(tmp_path / "one.jsonl", orient="records", lines=True)
    jsonl = load_dataset(f"jsonl:{tmp_path / 'one.jsonl'}")
    assert jsonl.test().inputs == tsv.test().inputs


def test_hf_splits_held_out_keep_the_datasets_fingerprint_of_their_rows(tmp_path):
    datasets.disable_progress_bars()
    folder = tmp_path / "hf"
    datasets.Dataset.from_dict({"text": [f"t {i}" for i in range(50)], "label": [i % 2 for i in range(50)]}
                               ).save_to_disk(str(folder))
    ds = load_dataset(f"hf:{folder}")
    train, test = ds.split("train"), ds.test()
    assert len(test) == 10 and test.ids[0].startswith("train:") and test.inputs[0] == f"t {test.ids[0][6:]}"
    assert train.fingerprint() != test.fingerprint() and test.fingerprint() == load_dataset(f"hf:{folder}").test().fingerprint()


def test_views_copy_only_the_rows_left_to_train_on(tmp_path):
    ds = load_dataset(f"tsv:{one_file(tmp_path)}", options=DatasetOptions(views=2))
    train = ds.split("train")
    copies = [i for i in train.ids if "~view" in i]
    assert len(copies) == 82 and not {c.split("~")[0] for c in copies} & set(ds.test().ids)


def test_asking_for_none_or_a_file_too_small_keeps_the_rows_whole(tmp_path):
    whole = load_dataset(f"tsv:{one_file(tmp_path)}", options=DatasetOptions(test_fraction=0))
    assert list(whole.splits) == ["train"] and "test_split" not in whole.info
    write(tmp_path / "t.tsv", "text\tlabel\nhello\t0\n")
    tiny = load_dataset(f"tsv:{tmp_path / 't.tsv'}")
    assert list(tiny.splits) == ["train"]
    with pytest.raises(AftpipeError, match="test_fraction=0.2 of the 1 labelled rows .* is no row at all; raise `test_fraction`"):
        load_dataset(f"tsv:{tmp_path / 't.tsv'}", options=DatasetOptions(test_fraction=0.2))
    with pytest.raises(AftpipeError, match="test_fraction=0.9 of the 1 labelled rows .* leaves none to train on; lower"):
        load_dataset(f"tsv:{tmp_path / 't.tsv'}", options=DatasetOptions(test_fraction=0.9))


def test_a_held_out_test_split_is_refused_where_a_test_split_exists(tmp_path):
    write(tmp_path / "d" / "train.tsv", "text\tlabel\na\t0\nb\t1\n")
    write(tmp_path / "d" / "test.tsv", "text\tlabel\nc\t0\n")
    with pytest.raises(AftpipeError, match="already has a `test` split; drop `test_fraction`"):
        load_dataset(f"tsv:{tmp_path / 'd'}", options=DatasetOptions(test_fraction=0.5))
    sst2 = load_dataset("sst2", options=DatasetOptions(test_fraction=0.01))  # dev stays; test is held out of train
    assert sst2.test().name == "test" and len(sst2.test()) == 673 and "dev" in sst2.splits


def test_the_row_plan_draws_only_from_the_rows_left_to_train_on(tmp_path):
    cfg = TrainConfig(dataset=f"tsv:{one_file(tmp_path)}", method="none", out="unused", holdout=0.2)
    data = load_run_data(cfg)
    planned = {data.train.ids[i] for part in (data.plan.train, data.plan.holdout, data.plan.unlabeled) for i in part}
    assert len(planned) == 82 and not planned & set(data.test.ids) and data.test.name == "test"
