"""Datasets by name: `load_dataset("sst2")`, `load_dataset("tsv:reviews.tsv")`.

Every loader is registered here, explicitly, so importing a loader module has no side effects and this
file is the one list of what exists. A loader is `(arg, data_dir, options) -> Dataset`, where `arg` is
the text after the colon of a `name:` entry (None for plain names).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from aftpipe.config import DatasetOptions
from aftpipe.data.ag_news import load_ag_news
from aftpipe.data.base import Dataset, Split
from aftpipe.data.digits import load_digits
from aftpipe.data.files import load_csv, load_imagefolder, load_jsonl, load_parquet, load_tsv
from aftpipe.data.glue import load_cola, load_sst2
from aftpipe.data.hf import load_hf
from aftpipe.data.mnist import load_mnist_5k
from aftpipe.errors import AftpipeError, option_name
from aftpipe.registry import Registry

Loader = Callable[[str | None, Path | None, DatasetOptions], Dataset]

DATASETS: Registry[Loader] = Registry("dataset")
DATASETS.register("sst2", load_sst2)
DATASETS.register("cola", load_cola)
DATASETS.register("ag_news", load_ag_news)
DATASETS.register("digits", load_digits)
DATASETS.register("mnist_5k", load_mnist_5k)
DATASETS.register("tsv:", load_tsv)
DATASETS.register("csv:", load_csv)
DATASETS.register("jsonl:", load_jsonl)
DATASETS.register("parquet:", load_parquet)
DATASETS.register("imagefolder:", load_imagefolder)
DATASETS.register("hf:", load_hf)

__all__ = ["DATASETS", "Dataset", "DatasetOptions", "Loader", "Split", "default_data_dir", "load_dataset"]


def default_data_dir() -> Path | None:
    """Where the named datasets' files are when no --data-dir is given.

    In order: $AFTPIPE_DATA_DIR; `../shared/data` from the working directory (running from a checkout
    that has the shared data beside it); the first `shared/data` found walking up from this package
    (the same layout, run from elsewhere); else None."""
    env = os.environ.get("AFTPIPE_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    beside_cwd = Path.cwd().parent / "shared" / "data"
    if beside_cwd.is_dir():
        return beside_cwd.resolve()
    for folder in Path(__file__).resolve().parents:
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return None


def load_dataset(spec: str, data_dir: str | Path | None = None, options: DatasetOptions = DatasetOptions()) -> Dataset:
    """Load the dataset named by `spec` (see `DATASETS.describe()`); `data_dir` defaults to `default_data_dir()`."""
    from aftpipe.data.splits import with_test_split
    from aftpipe.data.views import with_views

    loader, arg = DATASETS.resolve(spec)
    if options.split_map and loader is not load_hf:
        raise AftpipeError(f"{option_name('split_map')} renames the splits of hf: datasets; dataset `{spec}` names "
                           f"its splits itself, so drop it")
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    # the test split first: views copy only the rows left to train on
    dataset = with_test_split(loader(arg, folder, options), options.test_fraction, options.split_seed)
    return with_views(dataset, options.views)
