"""`hf:` datasets: folders written by `datasets`' save_to_disk (made here, offline), and the hub's error offline."""

import datasets  # the `hub` extra, installed by `make setup`
import numpy as np
import pytest

from aftpipe.config import DatasetOptions, TrainConfig
from aftpipe.data import load_dataset
from aftpipe.errors import AftpipeError


def texts(n, seed=0):
    rng = np.random.default_rng(seed)
    pos, neg = ["good", "great", "superb", "fine"], ["bad", "awful", "dull", "boring"]
    labels = rng.integers(0, 2, n)
    return [f"{' '.join(rng.choice(pos if y else neg, 3))} film {i}" for i, y in enumerate(labels)], labels.tolist()


@pytest.fixture
def saved(tmp_path):
    """A DatasetDict with a ClassLabel, as `save_to_disk` writes it: train / validation / an unlabeled test."""
    datasets.disable_progress_bars()
    label = datasets.ClassLabel(names=["neg", "pos"])
    feats = datasets.Features({"sentence": datasets.Value("string"), "label": label})
    parts = {}
    for name, n, seed in (("train", 120, 0), ("validation", 40, 1), ("test", 30, 2)):
        t, y = texts(n, seed)
        parts[name] = datasets.Dataset.from_dict({"sentence": t, "label": y if name != "test" else [-1] * n}, features=feats)
    path = tmp_path / "reviews"
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path


def test_a_saved_dataset_dict_loads_with_its_class_names_and_rows(saved):
    ds = load_dataset(f"hf:{saved}")
    assert ds.name.startswith("reviews-hf-") and ds.modality == "text" and list(ds.splits) == ["train", "validation", "test"]
    assert ds.num_classes == 2 and ds.class_names == ["neg", "pos"] and ds.info["text_col"] == "sentence"
    train = ds.split("train")
    ref = datasets.load_from_disk(str(saved))["train"]
    assert train.inputs == list(ref["sentence"]) and train.labels.tolist() == list(ref["label"])
    assert train.ids[:2] == ["train:0", "train:1"] and (ds.split("test").labels == -1).all()


def test_split_map_keeps_and_renames_splits(saved):
    ds = load_dataset(f"hf:{saved}", options=DatasetOptions(split_map={"train": "train", "validation": "test"}))
    assert list(ds.splits) == ["train", "test"] and (ds.split("test").labels >= 0).all()
    with pytest.raises(AftpipeError, match="has no split `dev` to map .*its splits: train, validation, test"):
        load_dataset(f"hf:{saved}", options=DatasetOptions(split_map={"dev": "test"}))
    with pytest.raises(AftpipeError, match="maps two splits to `test`"):
        DatasetOptions(split_map={"validation": "test", "test": "test"})
    with pytest.raises(AftpipeError, match="renames the splits of hf: datasets"):
        load_dataset("sst2", options=DatasetOptions(split_map={"dev": "test"}))


def test_the_fingerprint_is_the_datasets_fingerprint_plus_the_rows(saved, tmp_path):
    a, b = load_dataset(f"hf:{saved}").split("train"), load_dataset(f"hf:{saved}").split("train")
    assert a.fingerprint() == b.fingerprint() and a.fingerprint([0, 1]) != a.fingerprint([0, 2])
    t, y = texts(120, 0)
    t[5] = "a changed sentence"
    changed = tmp_path / "changed"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"sentence": t, "label": y})}).save_to_disk(str(changed))
    assert load_dataset(f"hf:{changed}").split("train").fingerprint() != a.fingerprint()


def test_plain_labels_single_dataset_and_images(tmp_path):
    single = tmp_path / "single"
    datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": ["spam", "ham", "spam", None]}).save_to_disk(
        str(single))
    ds = load_dataset(f"hf:{single}", options=DatasetOptions(test_fraction=0))  # the rows as they are
    assert list(ds.splits) == ["train"] and ds.class_names == ["ham", "spam"]
    assert ds.split("train").labels.tolist() == [1, 0, 1, -1]
    ints = tmp_path / "ints"
    datasets.Dataset.from_dict({"body": ["a", "b", "c"], "y": [2, 0, -1]}).save_to_disk(str(ints))
    ds = load_dataset(f"hf:{ints}", options=DatasetOptions(text_col="body", label_col="y", test_fraction=0))
    assert ds.num_classes == 3 and ds.split("train").labels.tolist() == [2, 0, -1] and ds.class_names is None

    from PIL import Image

    imgs = [Image.fromarray(np.full((8, 8, 3), v, dtype=np.uint8)) for v in (0, 255)]
    pics = tmp_path / "pics"
    datasets.Dataset.from_dict({"image": imgs, "label": [0, 1]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "label": datasets.Value("int64")})).save_to_disk(str(pics))
    ds = load_dataset(f"hf:{pics}")
    x = ds.split("train").inputs[1]
    assert ds.modality == "image" and x.size == (8, 8) and np.asarray(x)[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("options, needles", [
    (DatasetOptions(text_col="body"), ["no column `body`", "`sentence`, `label`", "text_col=NAME"]),
    (DatasetOptions(label_col="y"), ["no label column `y`", "label_col=NAME"]),
])
def test_bad_columns_name_the_columns_there_are(saved, options, needles):
    with pytest.raises(AftpipeError) as e:
        load_dataset(f"hf:{saved}", options=options)
    assert all(n in str(e.value) for n in needles), str(e.value)


def test_a_hub_name_offline_is_a_one_line_error(cli, one_line_error):
    code, _, err = cli(["extract", "--dataset", "hf:no-such-org/no-such-data:cfg", "--source", "tfidf"])
    one_line_error(code, err, "cannot load `no-such-org/no-such-data` from the hub", "save_to_disk")


def test_extract_and_train_from_a_saved_folder(saved, tmp_path, cli):
    from aftpipe.api import train

    code, out, err = cli(["extract", "--dataset", f"hf:{saved}", "--source", "tfidf", "--tfidf-dim", "16",
                          "--split-map", "train=train,validation=test", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, err
    [store] = (tmp_path / "cache").glob("reviews-hf-*/tfidf")  # named by the folder and its split map
    m = train(TrainConfig(dataset=f"hf:{saved}", features=(str(store),), method="linear_probe",
                          dataset_options=DatasetOptions(split_map={"train": "train", "validation": "test"}),
                          out=str(tmp_path / "probe")))
    assert m.rows["test"] == 40 and m.test["accuracy"] > 0.8
    # rows changed after extraction: the store no longer matches and says so before training
    t, y = texts(120, 0)
    t[0] = "changed"
    ds = datasets.load_from_disk(str(saved))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"sentence": t, "label": y}, features=ds["train"].features),
                          "validation": ds["validation"]}).save_to_disk(str(tmp_path / "reviews2"))
    (tmp_path / "cache" / "reviews2").symlink_to(store.parent)
    with pytest.raises(AftpipeError, match="does not match dataset"):
        train(TrainConfig(dataset=f"hf:{tmp_path / 'reviews2'}", features=str(tmp_path / "cache" / "reviews2" / "tfidf"),
                          method="linear_probe", out=str(tmp_path / "probe2"),
                          dataset_options=DatasetOptions(split_map={"validation": "test", "train": "train"})))
