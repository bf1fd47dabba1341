"""Hugging Face `datasets`: `hf:<save_to_disk folder | hub name>[:config]`.

    aftpipe extract --dataset hf:data/reviews --source minilm           # DatasetDict.save_to_disk("data/reviews")
    aftpipe extract --dataset hf:glue:sst2 --split-map validation=test  # the hub (or its local cache)

A folder written by `save_to_disk` is read with `load_from_disk` (a single `Dataset` is the split `train`);
anything else is a hub name for `load_dataset(name, config)`, which on an offline machine finds only what
its cache already holds. `--split-map FROM=TO` keeps only the named splits, renamed (hub datasets call
their splits train/validation/test, and GLUE's test split has no labels); without it every split is kept
under its own name.

Columns: the input is `--text-col` (default: the first of text, sentence, content) or, for images, the
first `Image` column; the label is `--label-col` (default: label): a `ClassLabel` keeps its names, integers
are class ids (negative: unlabeled, as GLUE's test split marks them), strings are class names numbered in
sorted order over every split.

Fingerprint: a split's rows are identified by the `datasets` fingerprint of the split (kept in the folder's
state.json, content-derived for data built in memory, and changed by every transform) plus the row indices,
so checking a store costs nothing however large the dataset; ids are `<split>:<row>`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from aftpipe.config import DatasetOptions
from aftpipe.data.base import Dataset, Split
from aftpipe.data.files import LABEL_COLUMN, TEXT_COLUMNS
from aftpipe.errors import AftpipeError, option_hint, option_name


class HFSplit(Split):
    """A split read from `datasets`: its fingerprint is the `datasets` fingerprint plus the rows. `source_rows`
    are the `datasets` rows this split's rows are (a test split held out of train holds some of them)."""

    def __init__(self, *args: Any, hf_fingerprint: str, source_rows: np.ndarray | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hf_fingerprint = hf_fingerprint
        self.source_rows = source_rows

    def subset(self, rows: np.ndarray, name: str, inputs: Sequence[Any]) -> Split:
        source_rows = rows if self.source_rows is None else self.source_rows[rows]
        return HFSplit(name, [self.ids[int(i)] for i in rows], inputs, self.labels[rows],
                       hf_fingerprint=self.hf_fingerprint, source_rows=source_rows)

    def fingerprint(self, rows: Sequence[int] | np.ndarray | None = None) -> str:
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        if self.source_rows is not None:
            rows = self.source_rows[rows]
        h = hashlib.sha256(b"datasets:" + self.hf_fingerprint.encode())
        h.update(np.ascontiguousarray(rows, dtype="<i8").tobytes())
        return h.hexdigest()


class HFImages(Sequence[Any]):
    """An `Image` column decoded on access (a PIL image, RGB), so a large dataset costs no memory up front."""

    def __init__(self, ds: Any, column: str, rows: range | None = None) -> None:
        self.ds, self.column = ds, column
        self.rows = rows if rows is not None else range(len(ds))

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> HFImages: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return HFImages(self.ds, self.column, self.rows[i])
        return self.ds[int(self.rows[i])][self.column].convert("RGB")


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """`datasets` draws tqdm bars while loading; aftpipe reports its own progress."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _open(spec: str, arg: str, data_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """The `datasets` object `arg` names (a folder, else a hub name with an optional `:config`), and its provenance."""
    try:
        import datasets
    except ImportError:
        raise AftpipeError(f"dataset `{spec}` needs the `datasets` package; `pip install 'aftpipe[hub]'`") from None
    candidates = [Path(arg).expanduser()]
    if data_dir is not None and not Path(arg).is_absolute():
        candidates.append(data_dir / arg)
    folder = next((p for p in candidates if p.is_dir()), None)
    with _quiet_datasets():
        if folder is not None:
            try:
                return datasets.load_from_disk(str(folder)), {"path": str(folder.resolve())}
            except FileNotFoundError as e:
                if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
                    raise _damaged(spec, folder, e) from None  # save_to_disk wrote it; a file of it is gone
                raise AftpipeError(f"{spec}: {folder} is not a folder written by `save_to_disk` ({_first_line(e)}); "
                                   "point at one, or give a hub name") from None
            except Exception as e:  # noqa: BLE001 - json, pyarrow and datasets each fail on damage their own way
                raise _damaged(spec, folder, e) from None
        name, _, config = arg.partition(":") if not Path(arg).is_absolute() else (arg, "", "")
        try:
            ds = datasets.load_dataset(name, config or None)
        except Exception as e:  # noqa: BLE001 - the hub client raises many types; all mean "cannot load it"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AftpipeError(f"{spec}: no folder {arg} and cannot load `{name}` from the hub ({first}); "
                               "offline, save it with `save_to_disk` on a connected machine and pass "
                               "hf:<that folder>") from None
        return ds, {"hub": name, "config": config or None, "revision": None}


def _splits(ds: Any, spec: str, split_map: dict[str, str]) -> dict[str, Any]:
    """Our split name → `datasets.Dataset`, after --split-map."""
    import datasets

    found = dict(ds) if isinstance(ds, datasets.DatasetDict) else {"train": ds}
    if not split_map:
        return found
    missing = [s for s in split_map if s not in found]
    if missing:
        raise AftpipeError(f"{spec} has no split `{missing[0]}` to map (its splits: {', '.join(found)}); fix "
                           f"{option_name('split_map')}")
    return {new: found[old] for old, new in split_map.items()}


def _input_column(spec: str, features: Any, options: DatasetOptions) -> tuple[str, str]:
    """(input column, modality)."""
    import datasets

    listed = ", ".join(f"`{c}`" for c in features) or "(none)"
    if options.text_col is not None:
        if options.text_col not in features:
            raise AftpipeError(f"{spec}: no column `{options.text_col}`; its columns are {listed}; pass "
                               f"{option_hint('text_col', 'NAME')} with one of them")
        col = options.text_col
    else:
        col = next((c for c in TEXT_COLUMNS if c in features), None)
        col = col or next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        if col is None:
            raise AftpipeError(f"{spec}: no text column (looked for `text`, `sentence`, `content`) and no image "
                               f"column; its columns are {listed}; pass {option_hint('text_col', 'NAME')}")
    feature = features[col]
    if isinstance(feature, datasets.Image):
        return col, "image"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return col, "text"
    raise AftpipeError(f"{spec}: column `{col}` holds {feature}, neither text nor images; pass "
                       f"{option_hint('text_col', 'NAME')} naming a text or Image column")


def _labels(spec: str, parts: dict[str, Any], label_col: str) -> tuple[dict[str, np.ndarray], int, list[str] | None]:
    """Class ids per split (-1: unlabeled), the class count and names, decided over every split at once."""
    import datasets

    for name, d in parts.items():
        if label_col not in d.features:
            raise AftpipeError(f"{spec} split `{name}`: no label column `{label_col}`; its columns are "
                               f"{', '.join(f'`{c}`' for c in d.features)}; pass {option_hint('label_col', 'NAME')}")
    features = [d.features[label_col] for d in parts.values()]
    raw = {name: d[label_col] for name, d in parts.items()}
    if isinstance(features[0], datasets.ClassLabel):
        names = list(features[0].names)
        if any(not isinstance(f, datasets.ClassLabel) or list(f.names) != names for f in features):
            raise AftpipeError(f"{spec}: the splits name their classes differently; give every split the same "
                               "ClassLabel")
        ids = {s: np.asarray(v, dtype=np.int64) for s, v in raw.items()}
        return {s: np.where(v < 0, -1, v) for s, v in ids.items()}, len(names), names
    dtype = getattr(features[0], "dtype", None)
    if dtype is not None and (dtype.startswith("int") or dtype.startswith("uint") or dtype == "bool"):
        ids = {s: np.asarray([-1 if x is None else int(x) for x in v], dtype=np.int64) for s, v in raw.items()}
        ids = {s: np.where(v < 0, -1, v) for s, v in ids.items()}
        top = max((int(v.max()) for v in ids.values() if len(v)), default=-1)
        if top < 0:
            raise AftpipeError(f"{spec}: no row has a label; pass {option_hint('label_col', 'NAME')}")
        return ids, top + 1, None
    if dtype in ("string", "large_string"):
        cells = {s: [None if x is None or not str(x).strip() else str(x).strip() for x in v] for s, v in raw.items()}
        names = sorted({c for v in cells.values() for c in v if c is not None})
        if not names:
            raise AftpipeError(f"{spec}: no row has a label; pass {option_hint('label_col', 'NAME')}")
        index = {n: i for i, n in enumerate(names)}
        return {s: np.asarray([-1 if c is None else index[c] for c in v], dtype=np.int64)
                for s, v in cells.items()}, len(names), names
    raise AftpipeError(f"{spec}: label column `{label_col}` holds {features[0]}; classes must be a ClassLabel, "
                       "integers or strings")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _damaged(spec: str, folder: Path | str, e: BaseException) -> AftpipeError:
    return AftpipeError(f"{spec}: the `save_to_disk` folder {folder} is damaged ({_first_line(e)}); save the dataset "
                        "again with `save_to_disk`")


def load_hf(arg: str | None, data_dir: Path | None, options: DatasetOptions) -> Dataset:
    """A Hugging Face dataset: a `save_to_disk` folder or a hub name[:config]; --text-col/--label-col/--split-map."""
    spec = f"hf:{arg or ''}"
    if not arg:
        raise AftpipeError("dataset `hf:` needs a folder or hub name after the colon, e.g. `hf:data/reviews`")
    ds, where = _open(spec, arg, data_dir)
    label_col = options.label_col or LABEL_COLUMN
    try:
        parts = _splits(ds, spec, options.split_map)
        col, modality = _input_column(spec, next(iter(parts.values())).features, options)
        labels, num_classes, class_names = _labels(spec, parts, label_col)
        splits = _read_splits(spec, parts, col, modality, labels)
    except (AftpipeError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - an arrow file damaged past its header fails only when read
        raise _damaged(spec, where.get("path") or arg, e) from None
    info = {"format": "hf", **where, "fingerprints": {n: d._fingerprint for n, d in parts.items()},
            "text_col": col, "label_col": label_col, "split_map": dict(options.split_map)}
    location = where.get("path") or f"hub:{where['hub']}:{where['config'] or ''}"
    return Dataset(spec=spec, modality=modality, splits=splits, num_classes=num_classes, class_names=class_names,
                   info=info, location=location)


def _read_splits(spec: str, parts: dict[str, Any], col: str, modality: str,
                 labels: dict[str, np.ndarray]) -> dict[str, Split]:
    splits: dict[str, Split] = {}
    for name, d in parts.items():
        if col not in d.features:
            raise AftpipeError(f"{spec} split `{name}` has no column `{col}`; give every split the same columns")
        if modality == "text":
            inputs: Sequence[Any] = list(d[col])
            bad = next((i for i, t in enumerate(inputs) if not isinstance(t, str)), None)
            if bad is not None:
                raise AftpipeError(f"{spec} split `{name}` row {bad}: `{col}` is {inputs[bad]!r}, not text; fix or "
                                   "drop that row (`dataset.filter(...)`)")
        else:
            inputs = HFImages(d, col)
        splits[name] = HFSplit(name, [f"{name}:{i}" for i in range(len(d))], inputs, labels[name],
                               hf_fingerprint=d._fingerprint)
    return splits


__all__ = ["HFImages", "HFSplit", "load_hf"]
