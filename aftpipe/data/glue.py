"""GLUE SST-2 and CoLA, read from the TSV files GLUE distributes (DATA_DIR/sst2, DATA_DIR/cola).

These files are not quoted, so a line is split on tabs as it is: the csv module would treat a sentence
starting with a double quote as a quoted field and silently drop the quotes. Only the line terminator is
removed (SST-2's train.tsv ends its lines with CRLF), so sentences keep their exact text, which the
fingerprint hashes. Example ids are `<file name>:<line number>` (`train.tsv:2` is the first SST-2 example).

When the files are missing and the hub may be used (see `base.hub_allowed`), the same task is taken from
the Hugging Face `glue` dataset instead; its ids are `<hub split>:<row>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aftpipe.config import DatasetOptions
from aftpipe.data.base import Dataset, Split, hub_allowed
from aftpipe.data.files import read_text
from aftpipe.errors import AftpipeError, option_hint

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv"}  # split name → file; GLUE's dev set is our test split
TEXT_COLUMNS = ("sentence", "content")  # SST-2 names the text column `sentence` in train.tsv, `content` in dev.tsv


def read_glue_tsv(path: Path, *, header: bool, num_classes: int) -> tuple[list[str], list[str], list[int]]:
    """(ids, sentences, labels) of a two-column GLUE TSV.

    With `header`, the columns are found by name (`label` and `sentence`/`content`); without one the file
    is `sentence<TAB>label` (CoLA)."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line terminator
    if not lines:
        raise AftpipeError(f"{path} is empty; replace it with the GLUE file")
    start, text_at, label_at = 0, 0, 1
    if header:
        names = lines[0].rstrip("\r").split("\t")
        texts_named = [c for c in TEXT_COLUMNS if c in names]
        if "label" not in names or not texts_named:
            raise AftpipeError(
                f"{path} line 1: expected a header naming `label` and `sentence` (or `content`), "
                f"got {', '.join(names)}; replace it with the GLUE file"
            )
        start, text_at, label_at = 1, names.index(texts_named[0]), names.index("label")
    ids: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    valid = {str(k): k for k in range(num_classes)}  # a dict lookup is the fast path for 67k labels
    name = path.name
    for n in range(start, len(lines)):
        line = lines[n]
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise AftpipeError(
                f"{path} line {n + 1}: expected 2 tab-separated fields, got {len(fields)}; fix that row "
                "(GLUE files are not quoted, so the sentence may not contain a tab)"
            )
        raw = fields[label_at]
        label = valid.get(raw)
        if label is None:
            label = valid.get(raw.strip())  # tolerate stray spaces, the slow path
        if label is None:
            problem = "is out of range" if raw.strip().lstrip("+-").isdigit() else "is not an integer"
            raise AftpipeError(
                f"{path} line {n + 1}: label `{raw}` {problem}, expected 0..{num_classes - 1}; fix that row"
            )
        ids.append(f"{name}:{n + 1}")
        texts.append(fields[text_at])
        labels.append(label)
    if not ids:
        raise AftpipeError(f"{path} has no rows; replace it with the GLUE file")
    return ids, texts, labels


def _missing_message(task: str, data_dir: Path | None) -> str | None:
    """The error for absent local files, or None when they are all there."""
    need = " and ".join(f"{task}/{f}" for f in SPLIT_FILES.values())
    fix = f"pass {option_hint('data_dir', 'DIR')} (or set AFTPIPE_DATA_DIR) to a folder holding {need}"
    if data_dir is None:
        return f"{task}: no data folder found; {fix}"
    for file in SPLIT_FILES.values():
        if not (data_dir / task / file).is_file():
            return f"{task}: no file {data_dir / task / file}; {fix}"
    return None


def _from_hub(task: str) -> dict[str, tuple[list[str], list[str], list[int]]]:
    """The task from the hub's `glue` dataset; its `validation` split plays GLUE's dev file.
    (For CoLA that is the in-domain dev set, 1,043 rows, not the local out-of-domain one.)"""
    import datasets  # type: ignore[import-not-found]

    hub: Any = datasets.load_dataset("glue", task)
    out = {}
    for split, hub_split in (("train", "train"), ("dev", "validation")):
        texts, labels = list(hub[hub_split]["sentence"]), list(hub[hub_split]["label"])
        out[split] = ([f"{hub_split}:{i}" for i in range(len(labels))], texts, labels)
    return out


def _load_glue(task: str, data_dir: Path | None, *, header: bool, class_names: list[str]) -> dict[str, Any]:
    missing = _missing_message(task, data_dir)
    if missing is None:
        assert data_dir is not None
        files = {split: data_dir / task / f for split, f in SPLIT_FILES.items()}
        parts = {split: read_glue_tsv(p, header=header, num_classes=len(class_names)) for split, p in files.items()}
        info: dict[str, Any] = {"source_files": {split: str(p.resolve()) for split, p in files.items()}}
    else:
        if not hub_allowed():
            raise AftpipeError(missing)
        try:
            parts = _from_hub(task)
        except Exception as e:  # any hub failure (network, auth, schema) means: use the local files
            raise AftpipeError(f"{missing} (the Hugging Face hub fallback failed too: {type(e).__name__})") from None
        info = {"source": f"huggingface:glue/{task}"}
    splits = {
        split: Split(name=split, ids=ids, inputs=texts, labels=np.array(labels, dtype=np.int64))
        for split, (ids, texts, labels) in parts.items()
    }
    return {"splits": splits, "info": info, "num_classes": len(class_names), "class_names": class_names}


def load_sst2(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """GLUE SST-2: binary movie-review sentiment; splits train (67,349) and dev (872); accuracy."""
    parts = _load_glue("sst2", data_dir, header=True, class_names=["negative", "positive"])
    return Dataset(spec="sst2", modality="text", metric="accuracy", test_split="dev", **parts)


def load_cola(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """GLUE CoLA: binary grammatical acceptability; splits train (8,551) and dev (516); Matthews correlation."""
    parts = _load_glue("cola", data_dir, header=False, class_names=["unacceptable", "acceptable"])
    return Dataset(spec="cola", modality="text", metric="mcc", test_split="dev", **parts)
