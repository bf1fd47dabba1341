"""scikit-learn's handwritten digits: 1,797 8×8 grey images of 0..9, bundled with scikit-learn.

It needs no download and no data folder, which makes it the image dataset for quick runs and tests.
Pixel values 0..16 are rescaled to uint8 0..255 (`round(v * 255 / 16)`) because image sources expect
ordinary 8-bit images. There is no official split, so rows are split 80/20 with a fixed seed
(`base.seeded_split`, seed 0), each part in the original order. Example ids are `digits:<row>`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aftpipe.config import DatasetOptions
from aftpipe.data.base import Dataset, Split, seeded_split

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_digits(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """scikit-learn digits: 1,797 8x8 grey images of 0..9 (no download); train/test 80/20 (seed 0)."""
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: sklearn is slow to import

    bunch = sklearn_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    n = len(images)
    n_test = int(round(n * TEST_FRACTION))
    splits = {}
    for name, rows in zip(("train", "test"), seeded_split(n, n - n_test, SPLIT_SEED)):
        splits[name] = Split(
            name=name,
            ids=[f"digits:{i}" for i in rows],
            inputs=[images[i] for i in rows],  # HxW uint8 arrays (views into one block)
            labels=labels[rows],
        )
    info = {
        "source": "sklearn.datasets.load_digits",
        "split_seed": SPLIT_SEED,
        "train": len(splits["train"]),
        "test": len(splits["test"]),
    }
    return Dataset(
        spec="digits",
        modality="image",
        splits=splits,
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        info=info,
    )
