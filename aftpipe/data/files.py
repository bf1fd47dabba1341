"""Generic datasets from the user's own files: `tsv:PATH`, `csv:PATH`, `jsonl:PATH`, `parquet:PATH` and
`imagefolder:PATH`.

A PATH to one file is a single split named `train`; a PATH to a directory holds one split per file
(`train.tsv`, `test.tsv` → splits `train`, `test`). Example ids are `<file name>:<line number>` (for Parquet,
`<file name>:<row number>`, counted from 0 as pandas and pyarrow count), so an id points at the row to look at. Anything wrong with the files is the user's to fix, so every problem raises
`AftpipeError` naming the file, the line and the fix rather than a parser traceback.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from aftpipe.config import DatasetOptions
from aftpipe.data.base import Dataset, Split
from aftpipe.errors import AftpipeError, option_hint

TEXT_COLUMNS = ("text", "sentence", "content")  # tried in this order when --text-col is not given
LABEL_COLUMN = "label"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
_INT = re.compile(r"[+-]?\d+")  # not int(): it would accept "1_000" and other non-label spellings
# Integer labels are class ids, so the largest sets the size of every classifier head. ImageNet-21k's 21,843
# classes is about the largest label set in use; an id beyond this is a typo or a column that is not a label,
# and would otherwise allocate a head of that many rows.
MAX_CLASSES = 100_000


# --- shared helpers (also used by the named loaders) ------------------------------------------------------


def decode_utf8(raw: bytes, where: str | Path) -> str:
    """`raw` as text, or an error naming the line of the first byte that is not UTF-8. utf-8-sig drops the
    byte-order mark spreadsheet exports put in front of the header, which would otherwise rename the
    first column."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        error = AftpipeError(f"{where} line {line} is not UTF-8 text (byte {raw[e.start]:#04x}); re-save it as UTF-8")
    raise error


def read_text(path: Path) -> str:
    """The whole file as text (see `decode_utf8`)."""
    try:
        return decode_utf8(path.read_bytes(), path)
    except FileNotFoundError:
        raise AftpipeError(f"{path} does not exist; check the path") from None
    except IsADirectoryError:
        raise AftpipeError(f"{path} is a folder, not a file; point at the file") from None


def resolve_path(spec: str, arg: str, data_dir: Path | None) -> Path:
    """PATH as typed, relative to the working directory; failing that, relative to the data folder, so
    `tsv:reviews.tsv` also finds DATA_DIR/reviews.tsv."""
    if not arg:
        kind = spec.partition(":")[0]
        raise AftpipeError(f"dataset `{spec}` needs a path after the colon, e.g. `{kind}:path/to/data`")
    path = Path(arg).expanduser()
    if path.exists():
        return path
    if data_dir is not None and not path.is_absolute() and (data_dir / path).exists():
        return data_dir / path
    where = f" (nor in the data folder {data_dir})" if data_dir is not None and not path.is_absolute() else ""
    raise AftpipeError(f"{spec}: {path} does not exist{where}; check the path")


# --- text tables: tsv / csv / jsonl --------------------------------------------------------------------------


@dataclass
class TextTable:
    """One file's rows before labels become class ids (that needs every split's labels). `labels` is None
    for a file read without its label column (inputs to predict on)."""

    path: Path
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    labels: list[str | None] | None = field(default_factory=list)  # stripped; None = unlabeled (empty / null)
    lines: list[int] = field(default_factory=list)  # line (or row) number of each row, for error messages
    unit: str = "line"  # what `lines` count: lines of a text file, rows of a Parquet file


def _pick_columns(path: Path, found: Sequence[str], options: DatasetOptions,
                  need_label: bool = True) -> tuple[str, str | None]:
    """(text column, label column) among `found`, or an error listing what is there. Without `need_label`
    a missing label column is None."""
    listed = ", ".join(f"`{c}`" for c in found) or "(none)"
    if options.text_col is not None:
        if options.text_col not in found:
            raise AftpipeError(
                f"{path}: no text column `{options.text_col}`; its columns are {listed}; "
                f"pass {option_hint('text_col', 'NAME')} with one of them"
            )
        text_col = options.text_col
    else:
        present = [c for c in TEXT_COLUMNS if c in found]
        if not present:
            raise AftpipeError(
                f"{path}: no text column (looked for `text`, `sentence`, `content`); its columns are {listed}; "
                f"pass {option_hint('text_col', 'NAME')}"
            )
        text_col = present[0]
    label_col = options.label_col or LABEL_COLUMN
    if label_col not in found:
        if not need_label:
            return text_col, None
        raise AftpipeError(f"{path}: no label column `{label_col}`; its columns are {listed}; pass "
                           f"{option_hint('label_col', 'NAME')}")
    return text_col, label_col


def _label_cell(value: str) -> str | None:
    value = value.strip()
    return value or None


def _tsv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a TSV file as the IANA text/tab-separated-values type defines it, and as the
    GLUE files are written: one record per line, a field is exactly the characters between two tabs. Quotes
    are text like any other (a review may well start with `"`), so a field cannot hold a tab or a newline."""
    for n, line in enumerate(read_text(path).split("\n"), start=1):
        yield n, line.removesuffix("\r").split("\t")


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of a CSV file under RFC 4180: a field in double quotes may hold commas, newlines
    and doubled quotes. strict: a quote that opens a field must close it before the next comma, or the row
    is refused, never re-read as something else."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    end_of_last = 0  # reader.line_num after the previous record: a record starts on the next line
    try:
        for row in reader:
            yield end_of_last + 1, row
            end_of_last = reader.line_num
    except csv.Error as e:
        raise AftpipeError(f"{path} line {end_of_last + 1}: {e} (a quoted field runs from a `\"` at its start to "
                           "the next lone `\"`); fix the quotes of that row or write `\"\"` for a quote") from None


def _read_delimited(path: Path, kind: str, options: DatasetOptions, need_label: bool = True) -> TextTable:
    """A tsv/csv file with a header row (see `_tsv_records` and `_csv_records` for how each is quoted)."""
    records = _tsv_records(path) if kind == "tsv" else _csv_records(path)
    what = "tab-separated" if kind == "tsv" else "comma-separated"
    fix = "a TSV field cannot hold a tab; fix that row" if kind == "tsv" else "fix or quote that row"
    table = TextTable(path)
    label_at: int | None = None
    header: list[str] | None = None
    text_at = 0
    for line, row in records:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank lines (a trailing one is common) carry no row
        if header is None:
            header = [c.strip() for c in row]
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:
                raise AftpipeError(f"{path} line {line}: the header names column `{twice[0]}` more than once; "
                                   "give every column its own name")
            text_col, label_col = _pick_columns(path, header, options, need_label)
            text_at = header.index(text_col)
            label_at = None if label_col is None else header.index(label_col)
            continue
        if len(row) != len(header):
            raise AftpipeError(f"{path} line {line}: expected {len(header)} {what} fields, got {len(row)}; {fix}")
        table.ids.append(f"{path.name}:{line}")
        table.texts.append(row[text_at])
        table.labels.append(None if label_at is None else _label_cell(row[label_at]))
        table.lines.append(line)
    if header is None:
        raise AftpipeError(f"{path} is empty; it needs a header row and one row per example")
    if not table.ids:
        raise AftpipeError(f"{path} has a header but no rows; add one row per example")
    if label_at is None:
        table.labels = None
    return table


def _read_jsonl(path: Path, options: DatasetOptions, need_label: bool = True) -> TextTable:
    """One JSON object per line; the columns are chosen from the first object's keys."""
    table = TextTable(path)
    text_col, label_col = "", None
    labels: list[str | None] = []
    for line, raw in enumerate(read_text(path).split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise AftpipeError(f"{path} line {line}: invalid JSON ({e.msg}, column {e.colno}); fix that line") from None
        if not isinstance(obj, dict):
            raise AftpipeError(f"{path} line {line}: expected a JSON object, got {type(obj).__name__}; fix that line")
        if not table.ids:
            text_col, label_col = _pick_columns(path, list(obj), options, need_label)
        for col in (text_col, label_col):
            if col is not None and col not in obj:
                raise AftpipeError(f"{path} line {line}: no `{col}` field; add it to that line")
        text = obj[text_col]
        if not isinstance(text, str):
            raise AftpipeError(f"{path} line {line}: `{text_col}` is not a string; fix that line")
        if label_col is not None:
            labels.append(_json_label(obj[label_col], path, line))
        table.ids.append(f"{path.name}:{line}")
        table.texts.append(text)
        table.lines.append(line)
    if not table.ids:
        raise AftpipeError(f"{path} is empty; it needs one JSON object per line")
    table.labels = labels if label_col is not None else None
    return table


def _json_label(label: Any, path: Path, line: int, unit: str = "line") -> str | None:
    """A label cell from JSON (jsonl) or Arrow (parquet) data: integers and strings; null is unlabeled.
    Integral floats pass as integers, NaN as null: pandas stores an integer column with gaps as floats."""
    if label is None or (isinstance(label, float) and label != label):
        return None
    if isinstance(label, str):
        return _label_cell(label)
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, int) and not isinstance(label, bool):
        return str(label)
    raise AftpipeError(
        f"{path} {unit} {line}: label {json.dumps(label, default=str)} is neither an integer nor a string; fix that {unit}"
    )


def _read_parquet(path: Path, options: DatasetOptions, need_label: bool = True) -> TextTable:
    """A Parquet file (pyarrow): the text column must hold strings; rows are numbered from 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except FileNotFoundError:
        raise AftpipeError(f"{path} does not exist; check the path") from None
    except (pa.ArrowException, OSError) as e:
        raise AftpipeError(f"{path} is not a readable Parquet file ({str(e).splitlines()[0]}); check the file") from None
    text_col, label_col = _pick_columns(path, names, options, need_label)
    columns = [text_col] + ([label_col] if label_col is not None else [])
    try:
        data = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise AftpipeError(f"{path} could not be read ({str(e).splitlines()[0]}); check the file") from None
    column = data.column(text_col)
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(kind))):
        raise AftpipeError(f"{path}: text column `{text_col}` holds {column.type}, not strings; pass "
                           f"{option_hint('text_col', 'NAME')} with a string column")
    texts = column.to_pylist()
    missing = next((i for i, t in enumerate(texts) if t is None), None)
    if missing is not None:
        raise AftpipeError(f"{path} row {missing}: `{text_col}` is null; fill or drop that row")
    if not texts:
        raise AftpipeError(f"{path} has no rows; add one row per example")
    table = TextTable(path, ids=[f"{path.name}:{i}" for i in range(len(texts))], texts=texts,
                      lines=list(range(len(texts))), unit="row")
    if label_col is None:
        table.labels = None
    else:
        table.labels = [_json_label(v, path, i, "row") for i, v in enumerate(data.column(label_col).to_pylist())]
    return table


def read_text_table(path: Path, options: DatasetOptions, need_label: bool = True) -> TextTable:
    """One .tsv / .csv / .jsonl / .parquet file by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise AftpipeError(f"{path}: cannot read `{suffix or path.name}` files; use .tsv, .csv, .jsonl or .parquet")
    return _READERS[suffix](path, options, need_label)


def _class_ids(tables: list[TextTable]) -> tuple[list[np.ndarray], int, list[str] | None]:
    """Labels → class ids, decided over all splits at once so train and test share one mapping.

    Integer labels are class ids as they are (class count = max + 1). Otherwise labels are names, numbered
    in sorted order. A mix is refused: "0", "1", "x" is far more likely a typo than a three-class task, and
    sorting names would silently renumber the integer ones."""
    cells = [(t, c, line) for t in tables for c, line in zip(t.labels or [], t.lines) if c is not None]
    if not cells:
        files = ", ".join(str(t.path) for t in tables)
        raise AftpipeError(f"{files}: no row has a label; fill the label column or pass "
                           f"{option_hint('label_col', 'NAME')}")
    is_int = [bool(_INT.fullmatch(c)) for _, c, _ in cells]
    if all(is_int):
        for t, c, line in cells:
            if not 0 <= int(c) < MAX_CLASSES:
                raise AftpipeError(
                    f"{t.path} {t.unit} {line}: label {c} is out of range, integer labels are class ids 0, 1, 2, ... "
                    f"(below {MAX_CLASSES:,}); fix that row (leave the label empty for an unlabeled row, or use "
                    "class names)"
                )
        class_names = None
        num_classes = max(int(c) for _, c, _ in cells) + 1
        to_id: Any = int
    elif any(is_int):
        first_int = cells[is_int.index(True)]
        first_name = cells[is_int.index(False)]
        raise AftpipeError(
            f"{first_name[0].path} {first_name[0].unit} {first_name[2]}: label `{first_name[1]}` is a name but "
            f"{first_int[0].path.name} {first_int[0].unit} {first_int[2]} has the integer label {first_int[1]}; "
            "use only class ids or only class names"
        )
    else:
        class_names = sorted({c for _, c, _ in cells})
        num_classes = len(class_names)
        to_id = {name: i for i, name in enumerate(class_names)}.__getitem__
    ids = [np.array([-1 if c is None else to_id(c) for c in t.labels or []], dtype=np.int64) for t in tables]
    return ids, num_classes, class_names


def _data_files(spec: str, path: Path, extensions: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(split name, file) pairs: the file itself as `train`, or every file of the kind in a folder."""
    if path.is_file():
        return [("train", path)]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise AftpipeError(
            f"{spec}: folder {path} holds no {'/'.join(extensions)} files; point at a file or at a folder of "
            f"split files such as train{extensions[0]}"
        )
    stems = [p.stem for p in files]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise AftpipeError(f"{spec}: folder {path} holds several files for split `{twice[0]}`; keep one")
    return [(p.stem, p) for p in files]


def _load_table(kind: str, arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    spec = f"{kind}:{arg or ''}"
    path = resolve_path(spec, arg or "", data_dir)
    tables: list[TextTable] = []
    names: list[str] = []
    for name, file in _data_files(spec, path, (f".{kind}",)):
        tables.append(_READERS[f".{kind}"](file, options))
        names.append(name)
    labels, num_classes, class_names = _class_ids(tables)
    splits = {
        name: Split(name=name, ids=t.ids, inputs=t.texts, labels=y) for name, t, y in zip(names, tables, labels)
    }
    info = {
        "format": kind,
        "source_files": [str(t.path.resolve()) for t in tables],
        "text_col": options.text_col,
        "label_col": options.label_col or LABEL_COLUMN,
    }
    return Dataset(
        spec=spec, modality="text", splits=splits, num_classes=num_classes, class_names=class_names, info=info,
        location=str(path.resolve()),
    )


def _read_tsv(path: Path, options: DatasetOptions, need_label: bool = True) -> TextTable:
    return _read_delimited(path, "tsv", options, need_label)


def _read_csv(path: Path, options: DatasetOptions, need_label: bool = True) -> TextTable:
    return _read_delimited(path, "csv", options, need_label)


_READERS = {".tsv": _read_tsv, ".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}


def load_tsv(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """Your own TSV file, or a folder of them (one split per file); header row, text and label columns."""
    return _load_table("tsv", arg, data_dir, options)


def load_csv(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """Your own CSV file, or a folder of them (one split per file); header row, text and label columns."""
    return _load_table("csv", arg, data_dir, options)


def load_jsonl(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """Your own JSON-lines file, or a folder of them (one split per file); one object per line."""
    return _load_table("jsonl", arg, data_dir, options)


def load_parquet(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """Your own Parquet file, or a folder of them (one split per file); text and label columns."""
    return _load_table("parquet", arg, data_dir, options)


# --- image folders ------------------------------------------------------------------------------------------


class ImageFiles(Sequence[Any]):
    """Images read on access: a folder of many photos costs a list of paths, not every decoded image.

    `raw_bytes(i)` is the file's bytes, which is what the split fingerprint hashes (decoding would be
    slower and would tie the fingerprint to the PIL version)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> ImageFiles: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return ImageFiles(self.paths[i])
        return read_image(self.paths[i])

    def raw_bytes(self, i: int) -> bytes:
        return self.paths[i].read_bytes()


def read_image(path: str | Path) -> Any:
    """The image file at `path` as an RGB PIL image; one line naming the file when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # convert() loads the pixels, so the file can be closed
    except Image.DecompressionBombError as e:
        raise AftpipeError(f"{path} is too large to decode safely ({str(e).split(',')[0]}); shrink or remove it") from None
    except (UnidentifiedImageError, OSError) as e:
        raise AftpipeError(f"{path} is not a readable image ({e}); replace or remove it") from None


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    found = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS)


def load_imagefolder(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """Your own images: PATH/<split>/<class>/<image> or PATH/<class>/<image> (a single `train` split)."""
    spec = f"imagefolder:{arg or ''}"
    root = resolve_path(spec, arg or "", data_dir)
    if not root.is_dir():
        raise AftpipeError(f"{spec}: {root} is not a folder; point at a folder of class folders holding images")
    top = _visible_dirs(root)
    if not top:
        raise AftpipeError(
            f"{spec}: {root} has no class folders; "
            f"lay it out as {root}/<class>/<image> or {root}/<split>/<class>/<image>"
        )
    # Split folders are recognised by holding folders themselves; class folders hold only images.
    has_splits = any(_visible_dirs(d) for d in top)
    split_dirs = {d.name: d for d in top} if has_splits else {"train": root}
    class_dirs = {split: _visible_dirs(d) for split, d in split_dirs.items()}
    for split, dirs in class_dirs.items():
        if not dirs:
            raise AftpipeError(
                f"{spec}: split folder {split_dirs[split]} has no class folders; put its images in <class> subfolders"
            )
    class_names = sorted({d.name for dirs in class_dirs.values() for d in dirs})  # one numbering for all splits
    class_id = {name: i for i, name in enumerate(class_names)}
    splits: dict[str, Split] = {}
    for split, dirs in class_dirs.items():
        paths: list[Path] = []
        labels: list[int] = []
        for d in dirs:
            found = _images(d)
            paths += found
            labels += [class_id[d.name]] * len(found)
        if not paths:
            raise AftpipeError(
                f"{spec}: {split_dirs[split]} has class folders but no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images to them"
            )
        ids = [p.relative_to(root).as_posix() for p in paths]
        splits[split] = Split(name=split, ids=ids, inputs=ImageFiles(paths), labels=np.array(labels, dtype=np.int64))
    info = {
        "format": "imagefolder",
        "root": str(root.resolve()),
        "layout": "splits" if has_splits else "classes",
    }
    return Dataset(
        spec=spec, modality="image", splits=splits, num_classes=len(class_names), class_names=class_names, info=info,
        location=str(root.resolve()),
    )
