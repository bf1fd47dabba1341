"""A finished run directory is a model folder: `aftpipe.load_model(RUN).predict(["a fine film"])`.

What a finished run holds for inference, written by `write_model_files` when training ends:

    model.json            what the folder is (`ModelSpec`, version 2): kind (student | linear_probe), modality, the
                          labels as the dataset gave them, how raw inputs become tensors (tokenizer and max length,
                          or image size and normalisation), the sha256 of the weights and of every other file the
                          model reads, a `binding` hash over all of these, and provenance (dataset, label budget,
                          method, β, sources with their weights' sha256, parameters, test metric, the command)
    student.safetensors   the weights, beside student.json (the architecture: `rebuild_student(spec)`)
    tokenizer.json        text students: text → the student's compact ids with the `tokenizers` library alone
    README.md             the model card, rendered from model.json
    head.safetensors      the linear probe's head on the foundation model's features, beside head.json

Nothing in it is a pickle: weights are safetensors, everything else JSON, YAML or Markdown. A linear probe
is a folder too, but not a self-contained one: it needs its foundation model, found at the path its feature
store recorded and checked against the recorded sha256.

A folder is checked before it is used, as a store's manifest is: model.json against the schema (a field
missing, of the wrong type or out of range is a one-line error naming it), each file it names against its
sha256 (a tokenizer.json from another run, a swapped weights file), the binding against the labels and the
input settings (labels edited by hand), and every file name against the folder (`../x`, an absolute path or a
symlink out of it is refused).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aftpipe import rundir
from aftpipe.errors import AftpipeError
from aftpipe.fileio import write_atomic, write_if_changed, write_json
from aftpipe.store.manifest import sha256_bytes, sha256_file

if TYPE_CHECKING:
    from aftpipe.config import TrainConfig
    from aftpipe.features import RunData
    from aftpipe.rundir import RunResult
    from aftpipe.students import Student

MODEL_JSON, TOKENIZER, CARD = "model.json", "tokenizer.json", "README.md"
STUDENT_WEIGHTS, STUDENT_SPEC = "student.safetensors", "student.json"
VERSION = 2  # model.json's schema version (1: before the files were bound to the weights)
BOUND = ("version", "kind", "modality", "labels", "label_cells", "weights", "files", "text", "image")  # `binding`'s
# How the built-in datasets' own files write each class where that is not its name (GLUE: ids; AG News: 1-based),
# so `predict` scores those files by what they mean; any other dataset's files write the labels themselves.
FILE_LABELS = {"sst2": ["0", "1"], "cola": ["0", "1"], "ag_news": ["1", "2", "3", "4"]}


# --- writing the folder (end of a training run) -------------------------------------------------------------
def write_model_files(out: Path, cfg: TrainConfig, data: RunData, result: RunResult,
                      student: Student | None = None) -> None:
    """Make the finished run `out` a model folder: model.json, the student's tokenizer.json (text) and the
    card. Called once the weights are on disk and before metrics.json, which marks the run finished; `out`
    may be the folder the run is built in (`<out>.partial`): the card names `cfg.out`, where it is published."""
    from aftpipe.config import command_line
    from aftpipe.methods.teacher import HEAD_SPEC, HEAD_WEIGHTS
    from aftpipe.store import open_features

    weights = out / (STUDENT_WEIGHTS if student is not None else HEAD_WEIGHTS)
    labels = data.dataset.class_names
    if not labels or len(labels) != data.num_classes:
        labels = list(range(data.num_classes))  # integer labels: the class ids are the dataset's own values
    info: dict[str, Any] = {
        "version": VERSION,
        "kind": "student" if student is not None else "linear_probe",
        "modality": data.dataset.modality,
        "labels": labels,
        "label_cells": FILE_LABELS.get(data.dataset.spec),
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "bytes": weights.stat().st_size},
        "files": {},  # every other file the model reads, by sha256
        "params": result.params,
        "dataset": {"spec": data.dataset.spec, "train_split": data.train.name, "test_split": data.test.name,
                    "metric": data.metric, "label_budget": cfg.labels, "rows": result.rows},
        "method": {"name": cfg.method, "beta": cfg.method_options.beta},
        "sources": [{"store": p, **open_features(p).source} for p in cfg.features],
        "test": result.test,
        "seed": cfg.seed,
        "command": command_line(cfg, "train"),
        "run_as": result.record.get("command"),  # as typed, when the CLI ran it (`aftpipe run ...`)
    }
    if student is not None:
        info["student"] = student.student
        if student.modality == "text":
            tokenizer = student.inference_tokenizer()
            write_atomic(out / TOKENIZER, tokenizer)
            # id_map: the tokenizer's ids still go through the student's own map (a pruned pretrained encoder)
            info["text"] = {"tokenizer": TOKENIZER, "max_length": student.cfg.max_length,
                            "pad_id": json.loads(tokenizer)["padding"]["pad_id"],
                            "id_map": student.id_map() is not None, "inputs": ["input_ids", "attention_mask"]}
        else:
            info["image"] = {**student.data_config, "inputs": ["pixels"]}
    spec_file = STUDENT_SPEC if student is not None else HEAD_SPEC
    info["files"] = {name: sha256_file(out / name) for name in (spec_file, *([TOKENIZER] if "text" in info else []))}
    info["binding"] = binding(info)
    spec = ModelSpec.from_dict(info)  # what is written is what load_model will accept
    write_json(out / MODEL_JSON, spec.to_dict())
    write_atomic(out / CARD, render_card(spec, cfg.out))


def add_seed_summary(runs: Sequence[str | Path], metric: str, values: Sequence[float], seeds: Sequence[int]) -> None:
    """Record the test metric over seeds (mean ± std, same settings) in each run's model.json and card; a
    pipeline calls it once a setting's seeds are all trained. Files that already say it are left alone."""
    from aftpipe.report import mean_std

    mean, std = mean_std(values)  # as the pipeline's results table says it
    summary = {"metric": metric, "mean": mean, "std": std, "seeds": [int(s) for s in seeds]}
    for run in map(Path, runs):
        path = run / MODEL_JSON
        if not path.exists():
            continue
        spec = ModelSpec.read(path).with_seed_summary(summary)
        write_if_changed(path, json.dumps(spec.to_dict(), indent=1, sort_keys=True, default=float))
        write_if_changed(run / CARD, render_card(spec, run))


# --- the model card ---------------------------------------------------------------------------------------
def _label_list(labels: Sequence[Any]) -> str:
    shown = ", ".join(f"`{v}`" for v in labels[:12])
    return shown + (f", … ({len(labels)} in all)" if len(labels) > 12 else "")


ONNX_EXAMPLE = """\
import json
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

folder = "{folder}"
labels = json.load(open(f"{{folder}}/config.json"))["labels"]
tokenizer = Tokenizer.from_file(f"{{folder}}/tokenizer.json")
session = ort.InferenceSession(f"{{folder}}/model.onnx")

sentences = ["a gripping, funny and moving film", "ninety minutes of tedium"]
enc = tokenizer.encode_batch(sentences)
inputs = {{"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
          "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}}
logits = session.run(["logits"], inputs)[0]
probs = np.exp(logits - logits.max(axis=1, keepdims=True))
probs /= probs.sum(axis=1, keepdims=True)
for sentence, p in zip(sentences, probs):
    print(labels[p.argmax()], f"{{p.max():.3f}}", sentence)
"""


def render_card(spec: ModelSpec, folder: str | Path, onnx: bool = False) -> str:
    """The model card (README.md) of a model folder, from its model.json alone; `onnx`: of its ONNX export."""
    from aftpipe.methods import METHODS

    ds, method, test = spec.dataset, spec.method, spec.test
    metric = spec.metric
    is_student = spec.kind == "student"
    name = spec.student or "linear probe"
    rows = ds.get("rows") or {}
    beta = f", β = {method['beta']:g}" if is_student and METHODS.get(method["name"]).uses_features else ""
    budget = f"with a {ds['label_budget']:,}-label budget" if ds.get("label_budget") else "with every label"
    split_rows = ""
    if "train" in rows and "holdout" in rows:
        unlabeled = ""
        if rows.get("unlabeled"):
            unlabeled = f", {rows['unlabeled']:,} unlabeled ({'used' if rows.get('unlabeled_used') else 'unused'})"
        split_rows = f" ({rows['train']:,} train + {rows['holdout']:,} hold-out rows{unlabeled})"
    test_rows = f" ({rows['test']:,} rows)" if "test" in rows else ""
    foundation = sum(int(s.get("params") or 0) for s in spec.sources)
    lines = [
        f"# {name} · `{ds['spec']}` · {method['name']}{beta}",
        "",
        f"A {spec.params:,}-parameter {spec.modality} classifier trained by aftpipe "
        + ("(Adaptive Feature Transfer and its baselines)." if is_student else
           "(a linear head on a foundation model's features: the reference students are measured against)."),
        "",
        "| | |",
        "|---|---|",
        f"| labels | {_label_list(spec.labels)} |",
        f"| dataset | `{ds['spec']}`: trained on `{ds['train_split']}` {budget}{split_rows}; tested on "
        f"`{ds['test_split']}`{test_rows} |",
        f"| method | `{method['name']}`{beta}: {dict(METHODS.describe()).get(method['name'], '')} |",
    ]
    for s in spec.sources:
        sha = "; ".join(f"{f} sha256 `{h}`" for f, h in (s.get("weights_sha256") or {}).items()) or "no weights file"
        what = f"`{s.get('model_id') or s.get('library')}`"
        extra = f", {s['params']:,} parameters" if s.get("params") else ""
        pooling = f", {s['pooling']} pooling" if s.get("pooling") else ""
        lines.append(f"| source | {what}{extra}{pooling}; store `{s['store']}`; {sha} |")
    size = f"{spec.params:,}"
    if is_student and foundation:
        size += f" ({foundation / spec.params:.0f}× fewer than the source{'s' if len(spec.sources) > 1 else ''})"
    lines.append(f"| parameters | {size} |")
    lines.append(f"| test {metric} | {test[metric]:.4f} on `{ds['test_split']}` (this run, seed {spec.seed}) |")
    if spec.across_seeds is not None:
        a = spec.across_seeds
        lines.append(f"| test {a['metric']} over seeds | {a['mean']:.4f} ± {a['std']:.4f} (seeds "
                     f"{', '.join(map(str, a['seeds']))}, same settings) |")
    if spec.text is not None:
        lines.append(f"| input | text, WordPiece pieces up to {spec.text.max_length} (`{TOKENIZER}`) |")
    elif spec.image is not None:
        im = spec.image
        lines.append(f"| input | images resized to {im.input_size[1]}×{im.input_size[2]} "
                     f"({im.input_size[0]} channels), normalised with mean {list(im.mean)} and std {list(im.std)} |")
    w = spec.weights
    if onnx:
        lines.append(f"| weights | `model.onnx`, exported from `{w.file}` (sha256 `{w.sha256}`) |")
    else:
        lines.append(f"| weights | `{w.file}`, {w.bytes:,} bytes, sha256 `{w.sha256}` |")
    example = '["a gripping, funny film"]' if spec.modality == "text" else '["photo.jpg"]'
    lines += ["", "## Use", ""]
    if onnx and spec.modality == "text":
        lines += ["With onnxruntime, tokenizers and numpy only (no torch, no aftpipe):", "", "```python",
                  ONNX_EXAMPLE.format(folder=folder).rstrip(), "```", ""]
    elif onnx:
        im = spec.image
        assert im is not None
        lines += [f"`model.onnx` takes `pixels`, float32 (batch, {', '.join(map(str, im.input_size))}): the image "
                  f"resized ({im.interpolation}) to {im.input_size[1]}×{im.input_size[2]}, scaled to [0, 1], "
                  "minus `mean`, divided by `std` (config.json), per channel. It returns `logits` in the order of "
                  "config.json's `labels`.", ""]
    else:
        lines += [
            "```python",
            "import aftpipe",
            f'model = aftpipe.load_model("{folder}")',
            f"model.predict({example})        # labels as the dataset names them",
            f"model.predict_proba({example})  # (N, {len(spec.labels)}) probabilities, columns in label order",
            "```",
            "",
            "```bash",
            f"aftpipe predict {folder} --input inputs.tsv --output predictions.csv",
        ]
        if is_student:
            lines.append(f"aftpipe export {folder} --format onnx --out {Path(folder).name}-onnx   # ONNX Runtime, no torch")
        lines += ["```", ""]
        if not is_student:
            lines += ["The probe needs its foundation model at inference: the source's path above, holding the same "
                      "weights (checked by sha256).", ""]
    lines += ["## Trained with", "", "```bash", spec.command, "```", ""]
    if spec.run_as and spec.run_as != spec.command:
        lines += [f"(It was run as `{spec.run_as}`; the command above trains the same model on its own.)", ""]
    return "\n".join(lines)


# --- where outputs may not go -------------------------------------------------------------------------------
def owning_folder(path: Path) -> str | None:
    """What aftpipe folder `path` lies in (a run folder, a feature store, an ONNX export), if any: files there
    belong to that folder, and an output written there would silently damage it."""
    from aftpipe.store.hdf5_store import is_hdf5

    if path.is_file() and is_hdf5(path):
        return f"the feature store {path}"
    owner = next(rundir.owners(path), None)
    return None if owner is None else str(owner)


# --- the schema -------------------------------------------------------------------------------------------
def binding(info: dict[str, Any]) -> str:
    """The sha256 that ties the files' hashes to the labels and input settings of model.json (`BOUND`)."""
    bound = {k: info.get(k) for k in BOUND}
    return sha256_bytes(json.dumps(bound, sort_keys=True, default=float).encode())


_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Fields:
    """Typed reads from one JSON object of model.json; a bad field is a SchemaError naming its path."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise SchemaError(f"`{where}` must be an object, got {type(doc).__name__}" if where else
                              f"it must hold a JSON object, not a {type(doc).__name__}")
        self.doc, self.where = doc, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, types: type | tuple[type, ...], what: str, optional: bool = False) -> Any:
        if key not in self.doc or (optional and self.doc[key] is None):
            if optional:
                return None
            raise SchemaError(f"`{self._name(key)}` is missing")
        v = self.doc[key]
        types = types if isinstance(types, tuple) else (types,)
        if not isinstance(v, types) or (type(v) is bool and bool not in types):  # JSON's true is no integer
            raise SchemaError(f"`{self._name(key)}` must be {what}, got {json.dumps(v)[:60]}")
        return v

    def int(self, key: str, low: int = 0) -> int:
        v = self.get(key, int, f"an integer ≥ {low}")
        if v < low:
            raise SchemaError(f"`{self._name(key)}` must be an integer ≥ {low}, got {v}")
        return v

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        v = self.get(key, str, f"one of {', '.join(choices)}")
        if v not in choices:
            raise SchemaError(f"`{self._name(key)}` must be one of {', '.join(choices)}, got {v!r}")
        return v

    def file_name(self, key: str) -> str:
        return _file_name(self.get(key, str, "a file name"), self._name(key))

    def sha256(self, key: str) -> str:
        v = self.get(key, str, "a sha256 (64 hex digits)")
        if not _SHA256.fullmatch(v):
            raise SchemaError(f"`{self._name(key)}` must be a sha256 (64 hex digits), got {v[:70]!r}")
        return v

    def sub(self, key: str, optional: bool = False) -> _Fields | None:
        v = self.get(key, dict, "an object", optional)
        return None if v is None else _Fields(v, self._name(key))


class SchemaError(ValueError):
    """A model.json field that is missing, of the wrong type or out of range (becomes an AftpipeError)."""


class OldFormat(SchemaError):
    """A model.json of version 1 (`"format": 1`), refused: its files are not bound to its weights."""


def _file_name(name: str, field: str) -> str:
    """A file directly inside the model folder: no separators, no `..`, not absolute."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        raise SchemaError(f"`{field}` must name a file inside the folder, got {name!r}")
    return name


@dataclass(frozen=True)
class FileDigest:
    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class TextInput:
    tokenizer: str
    max_length: int
    pad_id: int
    id_map: bool
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class ImageInput:
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class ModelSpec:
    """model.json, checked: what `load_model` relies on, typed and bounded. Provenance (dataset, method,
    sources, test, command) is checked for its type only; the model card reads it. The one way aftpipe reads
    model.json (`read`, `read_model_spec`) and writes it (`to_dict`: the file as read, key for key)."""

    version: int
    kind: str  # student | linear_probe
    modality: str  # text | image
    labels: tuple[str | int, ...]
    label_cells: tuple[str, ...] | None  # how the dataset's files write each label, when not by its name
    weights: FileDigest
    files: dict[str, str]  # every other file the model reads → sha256
    binding: str
    params: int
    metric: str
    student: str | None
    text: TextInput | None
    image: ImageInput | None
    dataset: dict[str, Any]  # spec, train_split, test_split, metric, label_budget, rows
    method: dict[str, Any]  # name, beta
    sources: tuple[dict[str, Any], ...]  # each feature store's source, with its weights' sha256
    test: dict[str, float]
    seed: int
    command: str  # the `aftpipe train` command that trains this model on its own
    run_as: str | None  # the command as typed, when the CLI ran it
    across_seeds: dict[str, Any] | None  # the test metric over the seeds of the same settings (a pipeline's)
    doc: dict[str, Any] = field(compare=False, repr=False)  # the file as read

    @classmethod
    def read(cls, path: Path) -> ModelSpec:
        """The model.json at `path`, checked against the schema (`SchemaError`; ValueError: not JSON)."""
        return cls.from_dict(json.loads(path.read_text()))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.doc)

    def with_seed_summary(self, summary: dict[str, Any]) -> ModelSpec:
        return ModelSpec.from_dict({**self.doc, "across_seeds": summary})

    @classmethod
    def from_dict(cls, doc: Any) -> ModelSpec:
        f = _Fields(doc, "")
        if "version" not in doc and doc.get("format") == 1:
            raise OldFormat("written by an older aftpipe (format 1), which does not bind the folder's files to its "
                            "weights")
        version = f.get("version", int, f"the integer {VERSION}")
        if version != VERSION:
            raise SchemaError(f"`version` is {version}, this aftpipe reads {VERSION}")
        kind = f.choice("kind", ("student", "linear_probe"))
        modality = f.choice("modality", ("text", "image"))
        labels = f.get("labels", list, "a list of names or integers")
        if len(labels) < 2 or not (all(isinstance(v, str) and v for v in labels)
                                   or all(type(v) is int for v in labels)):
            raise SchemaError(f"`labels` must list 2 or more names (or 2 or more integers), got {json.dumps(labels)[:60]}")
        if len(set(labels)) != len(labels):
            raise SchemaError("`labels` must be distinct")
        cells = f.get("label_cells", list, "a list of strings", optional=True)
        if cells is not None and (len(cells) != len(labels) or not all(isinstance(c, str) for c in cells)):
            raise SchemaError(f"`label_cells` must be {len(labels)} strings, one per label")
        w = f.sub("weights")
        assert w is not None
        weights = FileDigest(w.file_name("file"), w.sha256("sha256"), w.int("bytes", 1))
        files_doc = f.sub("files")
        assert files_doc is not None
        files = {_file_name(k, f"files.{k}"): files_doc.sha256(k) for k in files_doc.doc}
        dataset = f.sub("dataset")
        assert dataset is not None
        metric = dataset.get("metric", str, "a metric name")
        dataset.get("test_split", str, "a split name")
        method, test = f.sub("method"), f.sub("test")
        assert method is not None and test is not None
        sources = f.get("sources", list, "a list")
        if not all(isinstance(s, dict) for s in sources):
            raise SchemaError("`sources` must be a list of objects")
        across = f.sub("across_seeds", optional=True)
        text = image = None
        t = f.sub("text", optional=True)
        if t is not None:
            tokenizer = t.file_name("tokenizer")
            if tokenizer not in files:
                raise SchemaError(f"`text.tokenizer` {tokenizer} is not among `files`, whose sha256 bind it")
            text = TextInput(tokenizer, t.int("max_length", 1), t.int("pad_id"), t.get("id_map", bool, "true or false"),
                             tuple(t.get("inputs", list, "a list of input names")))
        i = f.sub("image", optional=True)
        if i is not None:
            size = i.get("input_size", list, "[channels, height, width]")
            mean, std = i.get("mean", list, "a list of numbers"), i.get("std", list, "a list of numbers")
            if len(size) != 3 or not all(type(v) is int and v >= 1 for v in size):
                raise SchemaError(f"`image.input_size` must be 3 integers ≥ 1, got {json.dumps(size)[:60]}")
            for name, vals in (("mean", mean), ("std", std)):
                if len(vals) != size[0] or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                    raise SchemaError(f"`image.{name}` must be {size[0]} numbers (one per channel)")
            if not all(v > 0 for v in std):
                raise SchemaError("`image.std` must be > 0")
            image = ImageInput(tuple(size), tuple(mean), tuple(std), i.get("interpolation", str, "a name"),
                               tuple(i.get("inputs", list, "a list of input names")))
        other = "image" if modality == "text" else "text"
        if (text, image)[modality == "text"] is not None:
            raise SchemaError(f"a {modality} model has no `{other}` settings")
        if kind == "student" and (text, image)[modality == "image"] is None:
            raise SchemaError(f"`{modality}` is missing")
        student = f.get("student", str, "a student name", optional=kind != "student")
        return cls(version, kind, modality, tuple(labels), None if cells is None else tuple(cells), weights, files,
                   f.sha256("binding"), f.int("params", 1), metric, student, text, image, dataset.doc, method.doc,
                   tuple(sources), test.doc, f.int("seed"), f.get("command", str, "the training command"),
                   f.get("run_as", str, "the command as typed", optional=True), None if across is None else across.doc,
                   dict(doc))


# --- loading ----------------------------------------------------------------------------------------------
def _retrain(folder: Path) -> str:
    return f"train it again with `aftpipe train ... --out {folder} --overwrite` (its README.md has the command)"


def read_model_spec(folder: str | Path) -> ModelSpec:
    """model.json of a finished run, checked (`ModelSpec`, the binding, file names inside the folder), or a
    one-line error saying what the folder is instead or what is wrong with it. The files' hashes are checked
    when they are read (`check_model_files`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AftpipeError(f"no run directory at {folder}; pass the --out folder of `aftpipe train`")
    if (folder / "model.onnx").exists():
        raise AftpipeError(f"{folder} is an ONNX export, not a run; load model.onnx with onnxruntime (see its README.md)")
    if not rundir.is_finished(folder):
        raise AftpipeError(f"{folder} is not a finished aftpipe run (no {rundir.METRICS}); pass the --out folder of a "
                           "finished `aftpipe train`")
    path = folder / MODEL_JSON
    if not path.exists():
        raise AftpipeError(f"{folder} has no {MODEL_JSON} (it was trained before runs became model folders); "
                           + _retrain(folder))
    try:
        spec = ModelSpec.read(path)
    except OldFormat as e:
        raise AftpipeError(f"{path} was {e}; {_retrain(folder)}") from None
    except SchemaError as e:
        raise AftpipeError(f"{path} is damaged: {e}; restore it or {_retrain(folder)}") from None
    except (ValueError, UnicodeDecodeError):
        raise AftpipeError(f"{path} is corrupt (not JSON); {_retrain(folder)}") from None
    if binding(spec.doc) != spec.binding:
        raise AftpipeError(f"{path} was edited after training (its labels or input settings no longer match the "
                           f"`binding` hash of the weights); restore it or {_retrain(folder)}")
    for name in (spec.weights.file, *spec.files):
        _inside(folder, name)
    return spec


def _inside(folder: Path, name: str) -> Path:
    """`folder / name`, refused when a symlink takes it out of the folder."""
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise AftpipeError(f"{path} leads out of the model folder (to {path.resolve()}); put the file itself in "
                           f"{folder}, or {_retrain(folder)}")
    return path


def check_model_files(folder: str | Path, spec: ModelSpec) -> Path:
    """Every file model.json names, refused when missing, truncated or not the one that was trained; returns the
    weights file. `spec` comes from `read_model_spec`."""
    folder = Path(folder)
    w = spec.weights
    path = _inside(folder, w.file)
    if not path.exists():
        raise AftpipeError(f"{path} is missing; restore it or {_retrain(folder)}")
    size = path.stat().st_size
    if size != w.bytes:
        what = "truncated" if size < w.bytes else "not the trained file"
        raise AftpipeError(f"{path} is {what} ({size:,} bytes, {w.bytes:,} expected); restore it or "
                           + _retrain(folder))
    if sha256_file(path) != w.sha256:
        raise AftpipeError(f"{path} is corrupt (its sha256 differs from {MODEL_JSON}'s); restore it or {_retrain(folder)}")
    for name, sha in spec.files.items():
        other = _inside(folder, name)
        if not other.exists():
            raise AftpipeError(f"{other} is missing; restore it or {_retrain(folder)}")
        if sha256_file(other) != sha:
            raise AftpipeError(f"{other} is not the file this model was trained with (its sha256 differs from "
                               f"{MODEL_JSON}'s: from another run, or edited); restore it or {_retrain(folder)}")
    return path


class Model:
    """A trained classifier: raw inputs in, the dataset's labels out. Build it with `load_model`.

    Text models take a list of strings; image models a list of image paths, PIL images or uint8 arrays.
    Inputs are processed in batches under `torch.inference_mode` on `device` (CPU unless asked)."""

    def __init__(self, folder: Path, spec: ModelSpec, encode: Callable[[Sequence[Any]], Any],
                 forward: Callable[[Any], Any], device: Any, net: Any = None) -> None:
        self.folder, self.spec, self.device = folder, spec, device
        self.labels: list[Any] = list(spec.labels)
        self.modality: str = spec.modality
        self.kind: str = spec.kind
        self.net = net  # the torch module behind `forward` (the student), None for a probe
        self._encode, self._forward = encode, forward

    def __repr__(self) -> str:
        return (f"Model({str(self.folder)!r}, {self.spec.student or self.kind}, {self.modality}, "
                f"{len(self.labels)} labels, {self.spec.params:,} parameters, device={self.device})")

    def encode(self, inputs: Sequence[Any]) -> Any:
        """One batch of raw inputs as the model's input tensors (on the CPU)."""
        return self._encode(self._checked(inputs))

    def logits(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """(N, C) float32 logits, columns in `labels` order."""
        import torch

        inputs = self._checked(inputs)
        if batch_size < 1:
            raise AftpipeError(f"batch_size must be at least 1, got {batch_size}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(inputs), batch_size):
                out.append(self._forward(self._encode(inputs[i:i + batch_size])).float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, len(self.labels)), dtype=np.float32)

    def predict_proba(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """(N, C) float32 class probabilities (softmax of the logits), columns in `labels` order."""
        z = self.logits(inputs, batch_size)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, inputs: Sequence[Any], batch_size: int = 64) -> list[Any]:
        """The predicted label of each input, as the dataset gave it (a class name, or an integer id)."""
        return [self.labels[i] for i in self.logits(inputs, batch_size).argmax(axis=1)]

    def _checked(self, inputs: Sequence[Any]) -> Sequence[Any]:
        if isinstance(inputs, (str, bytes, os.PathLike)):
            raise AftpipeError("inputs must be a list; wrap a single input in one: model.predict([x])")
        return inputs if isinstance(inputs, Sequence) else list(inputs)


def _text_encoder(folder: Path, text: TextInput, id_map: np.ndarray | None) -> Callable[[Sequence[Any]], Any]:
    """Texts → the student's ids padded to max_length, exactly as it was trained: the folder's tokenizer.json,
    then the student's id map if it has one."""
    import torch
    from tokenizers import Tokenizer

    path = folder / text.tokenizer
    if not path.exists():
        raise AftpipeError(f"{path} is missing; restore it or train the run again")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exceptions for bad files
        raise AftpipeError(f"{path} is corrupt ({str(e).splitlines()[0][:120]}); restore it or train the run again") from None
    tok.enable_padding(length=text.max_length, pad_id=text.pad_id)
    encode_batch = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast skips offsets (tokenizers >= 0.20)

    def encode(texts: Sequence[Any]) -> dict[str, Any]:
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise AftpipeError(f"this model takes texts, but input {bad} is a {type(texts[bad]).__name__}; pass strings")
        enc = encode_batch(list(texts))  # numpy, not torch.tensor, from the lists: 5x faster at batch 64
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        return {"input_ids": torch.from_numpy(ids if id_map is None else id_map[ids]),
                "attention_mask": torch.from_numpy(np.array([e.attention_mask for e in enc], dtype=np.int64))}

    return encode


def open_image(x: Any) -> Any:
    """A path is opened as an RGB PIL image (as imagefolder datasets are); images and arrays pass through."""
    if not isinstance(x, (str, os.PathLike)):
        return x
    from aftpipe.data.files import read_image

    return read_image(x)


def _same_classes(folder: Path, spec: ModelSpec, classes: int) -> None:
    if classes != len(spec.labels):
        raise AftpipeError(f"{folder / MODEL_JSON} names {len(spec.labels)} labels, but its weights give {classes} "
                           f"classes; restore model.json or {_retrain(folder)}")


def _student(folder: Path, spec: ModelSpec, device: Any) -> Model:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from aftpipe.students import rebuild_student

    weights = check_model_files(folder, spec)
    try:
        architecture = json.loads((folder / STUDENT_SPEC).read_text())
    except FileNotFoundError:
        raise AftpipeError(f"{folder / STUDENT_SPEC} is missing; restore it or train the run again") from None
    except json.JSONDecodeError:
        raise AftpipeError(f"{folder / STUDENT_SPEC} is corrupt (not JSON); restore it or train the run again") from None
    student = rebuild_student(architecture)
    try:
        student.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError) as e:
        raise AftpipeError(f"{weights} does not load into the student ({str(e).splitlines()[0][:160]}); "
                           "restore it or train the run again") from None
    _same_classes(folder, spec, student.num_classes)
    student.eval().to(device)
    if spec.text is not None:
        encode = _text_encoder(folder, spec.text, student.id_map())
    else:
        def encode(images: Sequence[Any]) -> dict[str, Any]:
            return student.encode([open_image(x) for x in images])

    def forward(batch: dict[str, Any]) -> Any:
        return student({k: v.to(device, non_blocking=True) for k, v in batch.items()})

    return Model(folder, spec, encode, forward, device, net=student)


def _probe(folder: Path, spec: ModelSpec, device: Any) -> Model:
    """The linear probe with its foundation model(s) in front: MiniLM forward → pooling → head."""
    import torch

    from aftpipe.config import HFSourceOptions
    from aftpipe.methods.teacher import load_head
    from aftpipe.sources.hf import HFSource

    check_model_files(folder, spec)
    sources = []
    for s in spec.sources:
        path = s.get("path")
        if s.get("library") != "transformers" or not path:
            raise AftpipeError(f"the linear probe in {folder} reads `{s.get('model_id') or s.get('library')}` features, "
                               "which aftpipe cannot recompute outside its store; only transformers sources can be")
        if not Path(path).is_dir():
            raise AftpipeError(f"the linear probe in {folder} needs its foundation model at {path}, which is not there; "
                               "install it there again")
        source = HFSource(path, HFSourceOptions(pooling=s["pooling"], layer=s["layer"], max_length=s["max_length"]),
                          label=s.get("model_id"))
        if source.weights != s.get("weights_sha256"):
            raise AftpipeError(f"the weights at {path} are not the ones the probe in {folder} was fitted on (sha256 "
                               "differs from its store's); restore them")
        sources.append(source.to(device))
    head = load_head(folder).to(device)
    _same_classes(folder, spec, head.num_classes)

    def encode(texts: Sequence[Any]) -> list[Any]:
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise AftpipeError(f"this model takes texts, but input {bad} is a {type(texts[bad]).__name__}; pass strings")
        return [s.collate(list(texts)) for s in sources]

    def forward(batches: list[Any]) -> Any:
        return head(torch.cat([s.forward(b) for s, b in zip(sources, batches, strict=True)], dim=1))

    return Model(folder, spec, encode, forward, device)


def load_model(folder: str | Path, device: str = "cpu") -> Model:
    """The model in a finished run directory, ready to `predict` on `device` (cpu, cuda, cuda:N or auto)."""
    from aftpipe.distributed import resolve_device

    folder = Path(folder)
    spec = read_model_spec(folder)
    dev = resolve_device(device)
    return _student(folder, spec, dev) if spec.kind == "student" else _probe(folder, spec, dev)


__all__ = ["Model", "ModelSpec", "add_seed_summary", "binding", "check_model_files", "load_model", "open_image",
           "owning_folder", "read_model_spec", "render_card", "write_model_files"]
