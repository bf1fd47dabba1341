"""AG News (4 news topics), from the official test set DATA_DIR/ag_news_test/test.csv, split here.

Only the 7,600-row test set is shipped (the 120k training set is far more than a benchmark of frozen
features needs), so it is split into train 6,000 / test 1,600 with a fixed seed (`base.seeded_split`,
seed 0); both parts keep the file's row order. The input text is `f"{title}. {description}"`: one string
so text sources need no second field, the period so the headline reads as its own sentence. The text is
otherwise as distributed (it contains source artefacts such as `\\` for line breaks and `#36;` for `$`);
cleaning it would make results incomparable with published ones. Labels 1..4 (World, Sports, Business,
Sci/Tech) become class ids 0..3. Example ids are `test.csv:<line number>` (`test.csv:2` is the first row).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from aftpipe.config import DatasetOptions
from aftpipe.data.base import Dataset, Split, hub_allowed, seeded_split
from aftpipe.data.files import read_text
from aftpipe.errors import AftpipeError, option_hint

CLASS_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
FILE = Path("ag_news_test") / "test.csv"
HEADER = ["label", "title", "description"]
SPLIT_SEED = 0
N_TRAIN = 6000


def read_ag_news_csv(path: Path) -> tuple[list[str], list[str], list[int]]:
    """(ids, texts, class ids 0..3) of every row of the AG News CSV, in file order."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    ids: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    valid = {str(k + 1): k for k in range(len(CLASS_NAMES))}
    end_of_last = 0
    try:
        for row in reader:
            line, end_of_last = end_of_last + 1, reader.line_num
            if not row:
                continue
            if line == 1:
                if [c.strip() for c in row] != HEADER:
                    raise AftpipeError(
                        f"{path} line 1: expected the header {','.join(HEADER)}, got {','.join(row)}; "
                        "replace it with the AG News test.csv"
                    )
                continue
            if len(row) != 3:
                raise AftpipeError(
                    f"{path} line {line}: expected 3 comma-separated fields, got {len(row)}; fix or quote that row"
                )
            label = valid.get(row[0].strip())
            if label is None:
                raise AftpipeError(f"{path} line {line}: label `{row[0]}` is not one of 1, 2, 3, 4; fix that row")
            ids.append(f"{path.name}:{line}")
            texts.append(f"{row[1]}. {row[2]}")
            labels.append(label)
    except csv.Error as e:
        raise AftpipeError(f"{path} line {reader.line_num}: {e}; fix that row") from None
    if not ids:
        raise AftpipeError(f"{path} has no rows; replace it with the AG News test.csv")
    return ids, texts, labels


def _from_hub() -> tuple[list[str], list[str], list[int]]:
    """The hub's `ag_news` test split (the same 7,600 rows; its text joins title and description with a
    space, and its labels are already 0..3)."""
    import datasets  # type: ignore[import-not-found]

    rows: Any = datasets.load_dataset("ag_news", split="test")
    texts, labels = list(rows["text"]), list(rows["label"])
    return [f"test:{i}" for i in range(len(labels))], texts, labels


def load_ag_news(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """AG News: 4-topic news classification; the official test set split train 6,000 / test 1,600 (seed 0)."""
    fix = f"pass {option_hint('data_dir', 'DIR')} (or set AFTPIPE_DATA_DIR) to a folder holding {FILE.as_posix()}"
    path = data_dir / FILE if data_dir is not None else None
    if path is not None and path.is_file():
        ids, texts, labels = read_ag_news_csv(path)
        source = str(path.resolve())
    else:
        missing = f"ag_news: no file {path}; {fix}" if path is not None else f"ag_news: no data folder found; {fix}"
        if not hub_allowed():
            raise AftpipeError(missing)
        try:
            ids, texts, labels = _from_hub()
        except Exception as e:  # any hub failure (network, auth, schema) means: use the local file
            raise AftpipeError(f"{missing} (the Hugging Face hub fallback failed too: {type(e).__name__})") from None
        source = "huggingface:ag_news/test"
    if len(ids) <= N_TRAIN:
        raise AftpipeError(
            f"ag_news: {source} has {len(ids)} rows, expected 7,600; replace it with the AG News test.csv"
        )
    y = np.array(labels, dtype=np.int64)
    splits = {}
    for name, rows in zip(("train", "test"), seeded_split(len(ids), N_TRAIN, SPLIT_SEED)):
        splits[name] = Split(name=name, ids=[ids[i] for i in rows], inputs=[texts[i] for i in rows], labels=y[rows])
    info = {"split_seed": SPLIT_SEED, "train": len(splits["train"]), "test": len(splits["test"]), "source_file": source}
    return Dataset(
        spec="ag_news", modality="text", splits=splits, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, info=info
    )
