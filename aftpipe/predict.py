"""`aftpipe predict`: a model folder over a file of inputs, the predictions to CSV or JSON Lines.

    report = predict_file("runs/sst2-aft", "reviews.tsv", output="predictions.csv")

Inputs are read as datasets are: a .tsv / .csv / .jsonl / .parquet file with a text column (`text_col`, else
text, sentence or content), a folder of images (at any depth; ids are paths relative to it), or `-` for one
text per line on stdin. Row ids are the datasets' ids (`reviews.tsv:2` is line 2, `reviews.parquet:0` row 0,
`stdin:1` the first line); blank texts are skipped and counted.

The CSV holds `id` (then `text` with `include_text`), `label` (the predicted label) and one `prob_<label>`
column per class, in input order. A `.jsonl` output (or `format="jsonl"`) holds one object per input instead,
`{"id", "label", "score", "probs": {label: p}}` (+ `"text"`), the shape a `transformers` pipeline gives.
The file is written under a temporary name and renamed, so a failed or interrupted run never leaves half of
it; it never replaces the input, a file inside a run folder, store or export, or (unless `overwrite`) any
existing file. When the input has the label column too, the run's metric on the rows whose labels the model
knows is reported, and the other rows are counted by label (`label_ids` says how a cell matches a label).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from aftpipe.config import DatasetOptions
from aftpipe.errors import AftpipeError, option_hint, option_name
from aftpipe.progress import Progress, SilentProgress

SHOW_PROGRESS_FROM = 2048  # rows: below this a prediction takes about a second, a bar would only flicker


@dataclass
class Inputs:
    """What to predict on: row ids, raw inputs (texts or image paths), and the label cells if the file has them."""

    ids: list[str]
    items: list[Any]
    labels: list[str | None] | None = None


@dataclass
class PredictReport:
    rows: int  # rows predicted (and written)
    output: Path | None  # None: written to stdout
    skipped: list[str] = field(default_factory=list)  # images that did not decode
    scores: dict[str, float] | None = None  # the run's metric(s) on the input's labelled rows
    labelled: int = 0  # rows whose label the model knows (scored)
    unknown: dict[str, int] = field(default_factory=dict)  # label cells the model does not know → rows (not scored)
    blank: int = 0  # blank texts, skipped
    labels: list[Any] = field(default_factory=list)  # the model's


# --- reading ----------------------------------------------------------------------------------------------
def _read_stdin(stream: IO[bytes]) -> Inputs:
    from aftpipe.data.files import decode_utf8

    lines = decode_utf8(stream.read(), "stdin").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise AftpipeError("stdin is empty; pipe one text per line (e.g. `echo 'a fine film' | aftpipe predict RUN --input -`)")
    return Inputs([f"stdin:{i}" for i in range(1, len(lines) + 1)], [t.removesuffix("\r") for t in lines])


def _read_images(folder: Path) -> Inputs:
    from aftpipe.data.files import IMAGE_EXTENSIONS

    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not found:
        raise AftpipeError(f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); point at a folder of images")
    return Inputs([p.relative_to(folder).as_posix() for p in found], found)


def read_inputs(path: str, modality: str, options: DatasetOptions = DatasetOptions(),
                stdin: IO[bytes] | None = None) -> Inputs:
    """The rows to predict on from `path` (see the module docstring), for a model of `modality`."""
    from aftpipe.data.files import read_text_table

    if path == "-":
        if modality != "text":
            raise AftpipeError(f"stdin holds texts, but this model takes images; pass {option_hint('input', 'FOLDER')} "
                               "of images")
        return _read_stdin(stdin if stdin is not None else sys.stdin.buffer)
    p = Path(path).expanduser()
    if not p.exists():
        raise AftpipeError(f"{p} does not exist; check {option_name('input')}")
    if modality == "image":
        if not p.is_dir():
            raise AftpipeError(f"this model takes images, but {p} is a file; pass {option_hint('input', 'FOLDER')} "
                               "of images")
        return _read_images(p)
    if p.is_dir():
        raise AftpipeError(f"{p} is a folder, but this model takes text; pass a .tsv, .csv, .jsonl or .parquet file, "
                           "or - for stdin")
    table = read_text_table(p, options, need_label=False)
    return Inputs(table.ids, table.texts, table.labels)


# --- predicting -------------------------------------------------------------------------------------------
def label_ids(cells: list[str | None], labels: list[Any], label_cells: list[str] | None = None) -> np.ndarray:
    """Each label cell as a class index, -1 when empty or not one of the model's labels. A cell matches a label
    by its name exactly as the dataset gave it (`1.0` is not `1`, `Billing` not `billing`), or by how the
    dataset's own files write it (`label_cells`: SST-2's 0/1 for negative/positive). Only a model whose
    labels are integers reads a cell as an integer (` 1` and `+1` are 1 there)."""
    by_name = {str(v): i for i, v in enumerate(labels)}
    for i, c in enumerate(label_cells or []):
        by_name.setdefault(c, i)
    integers = all(type(v) is int for v in labels)
    by_int = {v: i for i, v in enumerate(labels)} if integers else {}
    out = np.full(len(cells), -1, dtype=np.int64)
    for r, c in enumerate(cells):
        if c is None:
            continue
        if c in by_name:
            out[r] = by_name[c]
        elif integers and re.fullmatch(r"\s*[+-]?[0-9]+\s*", c) and int(c) in by_int:
            out[r] = by_int[int(c)]
    return out


def _open_output(output: str | Path | None, input: str, overwrite: bool) -> tuple[Path | None, Path | None]:
    """(target, temporary file beside it), created now so an unwritable --output fails before any work; None
    for stdout (no --output, or `-`). Refused: the input itself, a file inside a run folder, store or export,
    and any existing file unless `overwrite`."""
    from aftpipe.model import owning_folder

    if output is None or str(output) == "-":
        return None, None
    target = Path(output).expanduser()
    if target.is_dir():
        raise AftpipeError(f"{option_name('output')} {target} is a folder; pass a file name such as "
                           f"{target / 'predictions.csv'}")
    if input != "-" and target.exists() and os.path.samefile(target, Path(input).expanduser()):
        raise AftpipeError(f"{option_name('output')} {target} is the input file; write the predictions to another file")
    owner = owning_folder(target.resolve())
    if owner is not None:
        raise AftpipeError(f"{option_name('output')} {target} is inside {owner}, whose files aftpipe manages; write the "
                           "predictions outside it")
    if os.path.lexists(target) and not overwrite:
        raise AftpipeError(f"{option_name('output')} {target} already exists; pass {option_hint('overwrite')} to "
                           "replace it, or choose another file")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.touch()
    except OSError as e:
        raise AftpipeError(f"cannot write {option_name('output')} {target} ({e.strerror}); choose a writable "
                           "folder") from None
    return target, tmp


FORMATS = ("csv", "jsonl")


def output_format(output: str | Path | None, format: str | None) -> str:
    """`format` when given, else by the output's extension: `.jsonl` is JSON Lines, anything else (and stdout) CSV."""
    if format is not None:
        if format not in FORMATS:
            raise AftpipeError(f"unknown {option_name('format')} `{format}`; predict writes {' or '.join(FORMATS)}")
        return format
    return "jsonl" if output not in (None, "-") and Path(output).suffix.lower() == ".jsonl" else "csv"


def _without_blanks(inputs: Inputs) -> tuple[Inputs, int]:
    """The rows whose text is not blank (a blank line in a file of texts is a separator, not an input)."""
    keep = [i for i, t in enumerate(inputs.items) if not isinstance(t, str) or t.strip()]
    if len(keep) == len(inputs.items):
        return inputs, 0
    labels = None if inputs.labels is None else [inputs.labels[i] for i in keep]
    return Inputs([inputs.ids[i] for i in keep], [inputs.items[i] for i in keep], labels), len(inputs.items) - len(keep)


def predict_file(run: str | Path, input: str, output: str | Path | None = None, batch_size: int = 64,
                 options: DatasetOptions = DatasetOptions(), strict: bool = False,
                 device: str = "cpu", progress: Progress | None = None, stdin: IO[bytes] | None = None,
                 stdout: IO[str] | None = None, overwrite: bool = False, threads: int | None = None,
                 include_text: bool = False, format: str | None = None) -> PredictReport:
    """Predict every row of `input` with the model in `run` (on `threads` torch CPU threads, when given); write
    the predictions to `output` (stdout when None or `-`) as CSV or JSON Lines (`format`, else `output_format`),
    with each input's text when `include_text`. An existing `output` is replaced only with `overwrite`; the
    input itself and the files of run folders, stores and exports never are. Images that do not decode are
    skipped and counted, or refused with `strict`."""
    from aftpipe.metrics import score
    from aftpipe.model import load_model, open_image, read_model_spec

    progress = progress or SilentProgress()
    if batch_size < 1:
        raise AftpipeError(f"{option_name('batch_size')} must be at least 1, got {batch_size}")
    if threads is not None:
        if threads < 1:
            raise AftpipeError(f"{option_name('threads')} must be ≥ 1, got {threads}; leave it out for torch's own choice")
        import torch

        torch.set_num_threads(threads)
    fmt = output_format(output, format)
    spec = read_model_spec(run)  # cheap checks first: a wrong folder fails before any file is read
    if include_text and spec.modality != "text":
        raise AftpipeError(f"{option_name('include_text')} adds the input text, but this model takes images (the id "
                           "is the image's path); drop it")
    inputs, blank = _without_blanks(read_inputs(input, spec.modality, options, stdin))
    if not inputs.items:
        raise AftpipeError(f"every one of the {blank} texts in {'stdin' if input == '-' else input} is blank; "
                           "give texts to classify")
    target, tmp = _open_output(output, input, overwrite)
    try:
        model = load_model(run, device)
        n = len(inputs.items)
        show = n >= SHOW_PROGRESS_FROM
        if show:
            progress.start(f"predict · {Path(run).name}", total=n, done=0)
        keep, probs, skipped = [], [], []
        # images are opened one batch at a time, so an unreadable one can be skipped; texts go in larger
        # chunks (the model batches them itself) so the progress bar costs nothing
        step = batch_size if model.modality == "image" else max(batch_size, 1024 // batch_size * batch_size)
        for start in range(0, n, step):
            chunk = range(start, min(n, start + step))
            items = [inputs.items[i] for i in chunk]
            if model.modality == "image":
                opened, rows = [], []
                for i, x in zip(chunk, items):
                    try:
                        opened.append(open_image(x))
                        rows.append(i)
                    except AftpipeError as e:
                        if strict:
                            raise AftpipeError(f"{e}, or drop {option_hint('strict')} to skip unreadable images") from None
                        skipped.append(inputs.ids[i])
                items, chunk = opened, rows
            if items:
                probs.append(model.predict_proba(items, batch_size))
                keep += list(chunk)
            if show:
                progress.advance(len(range(start, min(n, start + step))))
        if show:
            progress.finish()
        if not keep:
            raise AftpipeError(f"none of the {n} images in {input} could be read; check the files")
        p = np.concatenate(probs)
        pred = p.argmax(axis=1)
        texts = [inputs.items[i] for i in keep] if include_text else None
        text = (_jsonl_text if fmt == "jsonl" else _csv_text)([inputs.ids[i] for i in keep], texts, pred, p,
                                                               model.labels)
        if target is None:
            (stdout or sys.stdout).write(text)
        else:
            assert tmp is not None
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    report = PredictReport(rows=len(keep), output=target, skipped=skipped, blank=blank, labels=list(model.labels))
    if inputs.labels is not None:
        cells = [inputs.labels[i] for i in keep]
        y = label_ids(cells, model.labels, spec.label_cells)
        mask = y >= 0
        report.labelled = int(mask.sum())
        report.unknown = dict(Counter(c for c, k in zip(cells, y) if k < 0 and c is not None).most_common())
        if report.labelled:
            report.scores = score(pred[mask], y[mask], spec.metric)
    return report


def _csv_text(ids: list[str], texts: list[str] | None, pred: np.ndarray, probs: np.ndarray, labels: list[Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", *(["text"] if texts is not None else []), "label", *(f"prob_{v}" for v in labels)])
    for r, (row_id, k, pr) in enumerate(zip(ids, pred, probs)):
        w.writerow([row_id, *([texts[r]] if texts is not None else []), labels[k], *(f"{x:.6f}" for x in pr)])
    return buf.getvalue()


def _jsonl_text(ids: list[str], texts: list[str] | None, pred: np.ndarray, probs: np.ndarray,
                labels: list[Any]) -> str:
    lines = []
    for r, (row_id, k, pr) in enumerate(zip(ids, pred, probs)):
        obj: dict[str, Any] = {"id": row_id}
        if texts is not None:
            obj["text"] = texts[r]
        obj.update(label=labels[k], score=round(float(pr[k]), 6),
                   probs={str(v): round(float(x), 6) for v, x in zip(labels, pr)})
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return "".join(lines)


def describe_unknown(report: PredictReport) -> str:
    """The rows left out of the metric, by label: `3 rows with labels the model does not know (Billing: 2, …)`."""
    n = sum(report.unknown.values())
    shown = ", ".join(f"{c}: {k}" for c, k in list(report.unknown.items())[:8])
    more = f", … ({len(report.unknown)} labels)" if len(report.unknown) > 8 else ""
    return (f"{n:,} row{'s' if n != 1 else ''} with label{'s' if len(report.unknown) != 1 else ''} the model does "
            f"not know ({shown}{more}) left out")


__all__ = ["FORMATS", "Inputs", "PredictReport", "describe_unknown", "label_ids", "output_format", "predict_file",
           "read_inputs"]
