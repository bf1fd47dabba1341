"""Students: the small downstream models aftpipe trains (docs/design.md §5).

    student = build_student("textcnn", num_classes=2, train_inputs=train.inputs, cfg=StudentConfig())
    X = student.encode(split.inputs)                     # once per split
    logits = student.head(student.features({k: v[idx] for k, v in X.items()}))
    spec = student.spec()                                # JSON; with the state dict it rebuilds the student
    same = rebuild_student(spec); same.load_state_dict(student.state_dict())

Text: textcnn, tiny-transformer, bow-mlp, hf-config:<json | config.json | folder>.
Image: small-cnn, timm:<name | folder>.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aftpipe.config import ConfigError, StudentConfig, refuse_undeclared, with_overrides
from aftpipe.errors import AftpipeError, option_name
from aftpipe.registry import Registry
from aftpipe.students.base import Modality, Student
from aftpipe.students.image import SmallCNN, Timm
from aftpipe.students.pretrained import HFPretrained, init_word_embeddings
from aftpipe.students.text import BowMLP, HFConfig, TextCNN, TinyTransformer

__all__ = ["STUDENTS", "Student", "StudentConfig", "build_student", "check_options", "rebuild_student", "student_class",
           "students_for"]

STUDENTS: Registry[type[Student]] = Registry("student")
STUDENTS.register("textcnn", TextCNN, help="Kim 2014 CNN: convs of widths 3/4/5, max over time (text)")
STUDENTS.register("tiny-transformer", TinyTransformer, help="2 pre-LN encoder layers, masked mean pool (text)")
STUDENTS.register("bow-mlp", BowMLP, help="mean of token embeddings, then an MLP (text)")
STUDENTS.register(
    "hf-config:", HFConfig, help="any transformers config (JSON, config.json or folder), random init (text)"
)
STUDENTS.register("hf:", HFPretrained, help="a pretrained transformers encoder (hub id, dir or minilm), "
                  "fine-tuned whole; --student-layers K keeps its first K layers (text)")
STUDENTS.register("small-cnn", SmallCNN, help="a few conv-BN-ReLU blocks + global average pool (image)")
STUDENTS.register("timm:", Timm, help="any timm model by name or folder; local weights with `pretrained` (image)")


def student_class(name: str) -> type[Student]:
    """The class registered under `name`, prefix entries (`timm:`) included."""
    return STUDENTS[name]


def students_for(modality: str) -> list[str]:
    """Registry names of the students that take `modality` inputs (`timm:NAME` style for prefixes)."""
    return [n + "NAME" if n.endswith(":") else n for n in STUDENTS.names() if STUDENTS[n].modality == modality]


def _infer_modality(train_inputs: Sequence[Any] | None) -> Modality | None:
    if train_inputs is None or len(train_inputs) == 0:
        return None
    return "text" if isinstance(train_inputs[0], str) else "image"


def check_options(spec: str, cfg: StudentConfig) -> None:
    """Refuse an option the student `spec` does not declare: one of its own (`textcnn@pretrained=x`) or one of
    `cfg` set away from its default, as a `ConfigError` at that field."""
    name, extra = STUDENTS.split_options(spec)
    refuse_undeclared("student", name, STUDENTS.get(name).Options, [*extra, *cfg.changed()])


def build_student(
    spec: str,
    num_classes: int,
    train_inputs: Sequence[Any] | None = None,
    cfg: StudentConfig | None = None,
    modality: Modality | None = None,
) -> Student:
    """A fresh, randomly initialised student (or timm weights from `cfg.pretrained`).

    `train_inputs` are the training split's inputs: text students build their vocabulary from them, small-cnn
    reads channels and size from the first one. `cfg` defaults to `StudentConfig()`; `modality` to what the
    inputs are (str → text)."""
    name, extra = STUDENTS.split_options(spec)  # `textcnn@init_embeddings=minilm`: this student's own options
    cls, arg = STUDENTS.resolve(name)
    cfg = with_overrides(cfg or StudentConfig(), extra, spec)
    modality = modality or _infer_modality(train_inputs)
    if modality is not None and modality not in ("text", "image"):
        raise AftpipeError(f"unknown modality `{modality}`; use `text` or `image`.")
    if modality is not None and cls.modality != modality:
        raise AftpipeError(
            f"student `{spec}` is for {cls.modality} but the data is {modality}; "
            f"use one of the {modality} students: {', '.join(students_for(modality))}."
        )
    if num_classes < 1:
        raise AftpipeError(f"num_classes must be at least 1, got {num_classes}; check the dataset's labels.")
    try:
        check_options(spec, cfg)
    except ConfigError as e:
        raise AftpipeError(f"{option_name(str(e.path[-1]))} {e.message}") from None
    student = cls.create(spec, arg, num_classes, train_inputs, cfg)
    if cfg.init_embeddings:
        init_word_embeddings(student, cfg.init_embeddings)
    return student


def rebuild_student(spec: dict[str, Any]) -> Student:
    """The architecture `spec` (from `Student.spec()`) describes, ready for `load_state_dict`."""
    if not isinstance(spec, dict) or "student" not in spec:
        raise AftpipeError("a student spec must be the dict written by Student.spec(); pass the saved spec JSON.")
    cls, _ = STUDENTS.resolve(STUDENTS.split_options(spec["student"])[0])
    return cls.from_spec(spec)
