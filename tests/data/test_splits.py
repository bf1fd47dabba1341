"""Which split a dataset is scored on: the dataset says so itself, whatever it is called or however it is loaded."""

import numpy as np
import pytest

from aftpipe.config import DatasetOptions, TrainConfig
from aftpipe.data import load_dataset
from aftpipe.errors import AftpipeError
from aftpipe.methods import METHODS
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
    data = load_run_data(cfg, METHODS.get("none"))
    assert data.test.name == "dev" and len(data.test) == 872


def test_a_saved_hf_folder_named_sst2_is_scored_on_the_split_it_maps_to_test(tmp_path):
    datasets = pytest.importorskip("datasets")  # the `hub` extra
    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    parts = {name: datasets.Dataset.from_dict({"sentence": [f"film {name} {i}" for i in range(n)],
                                               "label": rng.integers(0, 2, n).tolist()})
             for name, n in (("train", 30), ("validation", 10))}
    folder = tmp_path / "sst2"  # the name GLUE's local copy also has: it must not decide the test split
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    options = DatasetOptions(split_map={"train": "train", "validation": "test"})
    cfg = TrainConfig(dataset=f"hf:{folder}", method="none", out="unused", dataset_options=options)
    data = load_run_data(cfg, METHODS.get("none"))
    assert data.test.name == "test" and data.test.ids[0] == "test:0" and len(data.test) == 10


def test_an_explicit_test_split_wins_and_a_missing_one_names_the_fixes(tmp_path):
    folder = tmp_path / "d"
    write(folder / "train.tsv", "text\tlabel\na\t0\nb\t1\n")
    write(folder / "valid.tsv", "text\tlabel\nc\t0\nd\t1\n")
    ds = load_dataset(f"tsv:{folder}")
    assert ds.test("valid").name == "valid"
    with pytest.raises(AftpipeError, match="has no split `test` to test on .*test_split=NAME"):
        ds.test()
