"""What a student is to aftpipe: a small model split into `features` (the penultimate layer, which the
AFT regulariser pulls towards the cached foundation-model features) and `head` (a linear classifier).

The training loop only ever does

    X = student.encode(split.inputs)                 # once per split: dict of tensors, first dim N
    h = student.features({k: v[idx] for k, v in X.items()})    # (B, num_features)
    logits = student.head(h)                         # (B, num_classes)

and saves `student.state_dict()` next to `student.spec()`. The spec is plain JSON holding everything that is
not a weight (resolved config, vocabulary, architecture arguments), so `rebuild_student(spec)` followed by
`load_state_dict` gives back the same model without the training data or any file the student was built from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from aftpipe.config import Config, NoOptions, StudentConfig

Modality = Literal["text", "image"]



class Student(nn.Module):
    """Base of every student: `features(batch) -> (B, num_features)`, `head(h) -> (B, num_classes)`.

    Subclasses set `modality`, `DEFAULTS`, build `self.classifier` (or override `head`), and implement
    `features`, `encode`, `create` (from training data) and `_spec_extra` (what `__init__` needs besides
    num_classes and cfg, as JSON)."""

    modality: ClassVar[Modality]
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    # The options it reads (config.py): it keeps its own part of the flat StudentConfig it is built with, and
    # an option it does not declare is refused by name (students.check_options)
    Options: ClassVar[type[Config]] = NoOptions

    def __init__(self, student: str, num_classes: int, num_features: int, cfg: Config) -> None:
        super().__init__()
        self.student = student  # the spec string it was built from, e.g. "textcnn" or "timm:resnet10t"
        self.num_classes = num_classes
        self.num_features = num_features
        self.cfg: Any = self.Options.of(cfg)

    # --- the contract -------------------------------------------------------------------------------
    def features(self, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    @property
    def head(self) -> nn.Module:
        """The classifier on `features`; a module, so `head(h)` and `head.parameters()` both work."""
        return self.classifier

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.head(self.features(batch))

    def encode(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Raw split inputs → CPU tensors with first dim N, computed once per split."""
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- rebuilding -----------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, student: str, arg: str | None, num_classes: int, train_inputs: Sequence[Any] | None, cfg: StudentConfig
    ) -> Student:
        """Build a fresh student; `arg` is what followed the colon in `prefix:arg` names."""
        raise NotImplementedError

    def _spec_extra(self) -> dict[str, Any]:
        return {}

    def spec(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-able values: `rebuild_student(spec)` gives this architecture."""
        return {
            "student": self.student,
            "modality": self.modality,
            "num_classes": self.num_classes,
            "num_features": self.num_features,
            "config": dataclasses.asdict(self.cfg),
            **self._spec_extra(),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Student:
        extra = {
            k: v for k, v in spec.items() if k not in ("student", "modality", "num_classes", "num_features", "config")
        }
        # the flat config reads both a spec's own options and one recorded whole (before students had their own)
        return cls(spec["student"], spec["num_classes"], StudentConfig(**spec["config"]), **extra)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (B, L, D) over the positions where mask (B, L) is nonzero; zeros for an empty row."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def cut_padding(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """`batch` without the padding columns no row uses. Text is right-padded to the student's max_length and
    students ignore padding exactly, so the cut changes nothing but the cost: SST-2 sentences are ~11
    WordPieces against a max_length of 64."""
    mask = batch.get("attention_mask")
    if mask is None or mask.ndim != 2 or not mask.shape[0]:
        return batch
    width = max(1, int(mask.sum(1).max()))
    return {k: v[:, :width] if v.ndim == 2 and v.shape[1] == mask.shape[1] else v for k, v in batch.items()}
