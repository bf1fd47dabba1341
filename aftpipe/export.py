"""`aftpipe export RUN --format onnx --out DIR`: a trained student for runtimes without torch.

    report = export_model("runs/sst2-aft", "exports/sst2-aft")

DIR holds
    model.onnx       the student. Text: inputs `input_ids` and `attention_mask` (int64, batch × sequence, both
                     axes dynamic), output `logits` (batch × classes). Image: input `pixels` (float32,
                     batch × C × H × W, batch dynamic).
    tokenizer.json   text: text → input_ids / attention_mask with the `tokenizers` library alone, padded to
                     max_length (the students ignore padding: `enable_padding()`, which pads to the longest text of
                     a batch, is faster on short texts and gives the same logits)
    config.json      labels (in logit order), max length or image size and normalisation, input/output names,
                     and the verification below
    README.md        the model card, with an example that needs only onnxruntime, tokenizers and numpy

The graph comes from torch's `torch.export`-based ONNX exporter (opset 18). Export checks itself before it
reports success: on 64 rows of the run's test split, ONNX Runtime's logits (inputs made exactly as a user
would make them, through the exported tokenizer.json, padded as shipped and to the longest row) must equal the
torch student's within 1e-4 and give the same argmax; otherwise nothing is written and the error names the
largest difference. The folder is built
under a temporary name beside DIR and renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aftpipe.errors import AftpipeError, option_hint, option_name
from aftpipe.fileio import write_atomic, write_json

FORMATS = ("onnx",)
OPSET = 18  # ONNX Runtime ≥ 1.14 runs it; the exporter's own default
TOLERANCE = 1e-4  # max |logit difference| between ONNX Runtime and torch
VERIFY_ROWS = 64


@dataclass(frozen=True)
class ExportReport:
    path: Path
    bytes: int  # size of the folder's files
    rows: int  # test rows the export was verified on
    split: str
    max_abs_diff: float


def _require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise AftpipeError(f"ONNX export needs {', '.join(missing)}; install them with `pip install 'aftpipe[export]'`")
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 5):
        raise AftpipeError(f"ONNX export needs torch ≥ 2.5 (its torch.export-based exporter), this is torch "
                           f"{torch.__version__}; upgrade torch")


class TextLogits(nn.Module):
    """The student as a function of (input_ids, attention_mask), the ids as tokenizer.json gives them: the
    signature the exported graph has. A student with an id map (a pruned pretrained encoder) carries it
    in the graph as a lookup table."""

    def __init__(self, student: nn.Module, id_map: np.ndarray | None = None) -> None:
        super().__init__()
        self.student = student
        self.register_buffer("id_map", None if id_map is None else torch.from_numpy(id_map))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.id_map is not None:
            input_ids = self.id_map[input_ids]
        return self.student({"input_ids": input_ids, "attention_mask": attention_mask})


class ImageLogits(nn.Module):
    """The student as a function of normalised pixels (batch, C, H, W)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.student({"pixels": pixels})


def _unsupported(e: BaseException) -> str:
    """What the exporter could not translate, from its exception chain: the op's name when it says one."""
    text, seen = "", set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text += f"\n{e}"
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    m = re.search(r"target=torch\.ops\.([\w.]+?)\.(?:default|[a-z_]+)\]", text) or re.search(r"op='([\w.]+)'", text)
    if m:
        return f"operator `{m.group(1)}` has no ONNX translation"
    summary = re.search(r"<class '[\w.]+'>: ([^\n]+)", text)
    return (summary.group(1) if summary else text.strip().splitlines()[0])[:200]


def _to_onnx(model: Any, path: Path) -> None:
    """Trace `model`'s student into an ONNX file with dynamic batch (and sequence) axes."""
    student = model.net.to("cpu").eval()
    batch = torch.export.Dim("batch")
    if model.modality == "text":
        from tokenizers import Tokenizer

        text = model.spec.text
        # traced on what tokenizer.json gives (before any id map, which the graph applies itself)
        enc = Tokenizer.from_file(str(model.folder / text.tokenizer)).encode_batch(["an example sentence", "another"])
        example = {k: torch.tensor([getattr(e, k) for e in enc]) for k in ("ids", "attention_mask")}
        example["input_ids"] = example.pop("ids")
        # the longest sequence a tokenizer.json truncated at max_length can produce; the bound lets students
        # with learned positions (tiny-transformer: pos[:L]) export
        seq = torch.export.Dim("sequence", max=text.max_length)
        module = TextLogits(student, student.id_map()).eval()
        args = (example["input_ids"], example["attention_mask"])
        names, shapes = list(text.inputs), {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    else:
        c, h, w = model.spec.image.input_size
        module, args = ImageLogits(student).eval(), (torch.zeros(2, c, h, w),)
        names, shapes = ["pixels"], {"pixels": {0: batch}}
    try:
        with _silenced():
            torch.onnx.export(module, args, str(path), input_names=names, output_names=["logits"],
                              dynamic_shapes=shapes, opset_version=OPSET, dynamo=True, external_data=False,
                              verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; each becomes one line for the user
        raise AftpipeError(f"student `{model.spec.student}` cannot be exported to ONNX: {_unsupported(e)} "
                           f"(torch {torch.__version__}, opset {OPSET}); nothing was written. Use it from Python "
                           "with aftpipe.load_model, or train a student without that operator") from None


def _verification_inputs(run: Path, model: Any, data_dir: str | None) -> tuple[list[Any], str]:
    """Up to 64 raw inputs spread over the run's test split (rows 0, …, N-1 evenly)."""
    from aftpipe import rundir
    from aftpipe.config import TrainConfig, load_config
    from aftpipe.data import load_dataset

    cfg = load_config(TrainConfig, run / rundir.CONFIG)
    dataset = load_dataset(cfg.dataset, data_dir or cfg.data_dir, cfg.dataset_options)
    split = dataset.split(model.spec.dataset["test_split"])
    rows = np.unique(np.linspace(0, len(split) - 1, min(VERIFY_ROWS, len(split))).round().astype(int))
    return [split.inputs[int(i)] for i in rows], split.name


def _onnx_logits(folder: Path, model: Any, items: list[Any]) -> list[np.ndarray]:
    """Logits from the exported folder, computed as a user without torch would (tokenizer.json + ONNX Runtime):
    for text, once with the shipped padding and once padded to the longest row (the dynamic sequence axis)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    if model.modality != "text":
        return [session.run(["logits"], {"pixels": model.encode(items)["pixels"].numpy()})[0]]
    from tokenizers import Tokenizer

    out = []
    for longest in (False, True):
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        if longest:
            tok.enable_padding(pad_id=model.spec.text.pad_id)
        enc = tok.encode_batch(items)
        out.append(session.run(["logits"], {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                                            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)})[0])
    return out


def _config(model: Any, split: str, rows: int, diff: float) -> dict[str, Any]:
    spec = model.spec
    cfg: dict[str, Any] = {
        "format": 1,
        "modality": spec.modality,
        "labels": list(spec.labels),
        "inputs": list((spec.text or spec.image).inputs),
        "output": "logits",
        "student": spec.student,
        "params": spec.params,
        "opset": OPSET,
        "verified": {"split": split, "rows": rows, "max_abs_diff": diff, "tolerance": TOLERANCE},
    }
    if spec.text is not None:
        cfg.update(tokenizer="tokenizer.json", max_length=spec.text.max_length, pad_id=spec.text.pad_id)
    else:
        cfg["image"] = {k: v for k, v in dataclasses.asdict(spec.image).items() if k != "inputs"}
    return cfg


OWN_EXPORT = "onnx"


def _check_out(run: Path, out: Path, overwrite: bool) -> None:
    """Refuse an --out that would put the export where it destroys or mixes with something else: the current
    folder or one above it, the run or a folder inside a run, store or export, a file, and a folder that is not
    an earlier export (which alone `overwrite` replaces)."""
    from aftpipe.model import owning_folder

    target, here, source = Path(os.path.abspath(out)).resolve(), Path.cwd().resolve(), run.resolve()
    suggestion = f"such as {run.name}-onnx"
    if target == here or target in here.parents:
        raise AftpipeError(f"{option_name('out')} {out} is the current folder or one above it; name a new folder for "
                           f"the export, {suggestion}")
    if target == source or target in source.parents:
        raise AftpipeError(f"{option_name('out')} {out} holds the run itself; choose another folder, {suggestion}")
    # <run>/onnx is the one place inside a run that holds its own export (`aftpipe distill` lays out its model
    # folder that way); anywhere else inside a run, store or export would mix with files aftpipe manages
    owner = None if target == source / OWN_EXPORT else owning_folder(target)
    if owner is not None:
        raise AftpipeError(f"{option_name('out')} {out} is inside {owner}, whose files aftpipe manages; export outside "
                           "it")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise AftpipeError(f"{option_name('out')} {out} is a file or link, not a folder; choose a new folder, "
                               f"{suggestion}")
        if not (out / "model.onnx").exists() or not (out / "config.json").exists():
            raise AftpipeError(f"{option_name('out')} {out} is a folder that holds no earlier export, which "
                               f"{option_hint('overwrite')} would replace; choose a new folder, {suggestion}")
        if not overwrite:
            raise AftpipeError(f"{out} already exists; pass {option_hint('overwrite')} to replace it, or choose "
                               f"another {option_name('out')}")


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Keep the exporter's own output from the user (a 70-line graph dump, progress lines, warnings, log
    records), at the file-descriptor level too: some of it is written below Python."""
    previous = logging.root.manager.disable
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            logging.disable(previous)


def export_model(run: str | Path, out: str | Path, format: str = "onnx", overwrite: bool = False,
                 data_dir: str | None = None) -> ExportReport:
    """Export the student of the finished run `run` to the folder `out` (see the module docstring)."""
    from aftpipe.model import TOKENIZER, load_model, render_card

    if format not in FORMATS:
        raise AftpipeError(f"unknown {option_name('format')} `{format}`; aftpipe exports: {', '.join(FORMATS)}")
    run, out = Path(run), Path(out).expanduser()
    model = load_model(run)
    if model.kind != "student":
        raise AftpipeError(f"{run} is a linear probe: it needs its foundation model at inference, so it is not a small "
                           "model to export; export a student run")
    _check_out(run, out, overwrite)
    shown, out = out, Path(os.path.abspath(out))  # `x/..` has no name to build the temporary folder's from
    _require_onnx()
    items, split = _verification_inputs(run, model, data_dir)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise AftpipeError(f"cannot create {shown} ({e.strerror}); choose a writable {option_name('out')}") from None
    try:
        _to_onnx(model, tmp / "model.onnx")
        if model.modality == "text":
            shutil.copyfile(run / TOKENIZER, tmp / TOKENIZER)
        want = model.logits(items)
        got = _onnx_logits(tmp, model, items)
        diff = max(float(np.abs(g - want).max()) for g in got)
        flipped = max(int((g.argmax(1) != want.argmax(1)).sum()) for g in got)
        if not diff <= TOLERANCE or flipped:  # `not <=` also catches NaN
            raise AftpipeError(
                f"ONNX Runtime's logits differ from the torch student's by up to {diff:.3g} (tolerance {TOLERANCE:g}) "
                f"on {len(items)} rows of `{split}`" + (f", and the predicted label on {flipped}" if flipped else "")
                + "; nothing was written")
        write_json(tmp / "config.json", _config(model, split, len(items), diff))
        write_atomic(tmp / "README.md", render_card(model.spec, shown, onnx=True))
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        if out.exists():
            os.replace(out, old)  # --overwrite: the old export is removed only once the new one is in place
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return ExportReport(shown, size, len(items), split, diff)


__all__ = ["ExportReport", "export_model"]
