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
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from aftpipe.errors import AftpipeError

Modality = Literal["text", "image"]


@dataclass(frozen=True)
class StudentConfig:
    """Size and input options of a student. A field left at None takes the student's own default
    (its `DEFAULTS`); `spec()` records the resolved values, so a rebuild never depends on defaults."""

    # Tokens kept per text after WordPiece; SST-2 sentences are ~25 WordPieces, and every student is
    # cheaper with a short fixed length (the transformer's position table grows with it).
    max_length: int = 64
    # Compact vocabulary (PAD and UNK included) built from the training split. The embedding table is
    # the bulk of a text student: 8000 x 48 = 384k parameters leaves ~100k for the body inside 0.5M
    # (the ≥45x-smaller-than-MiniLM budget), and 8000 ids cover almost every token of SST-2.
    vocab_size: int = 8000
    # Text token embedding width (also the transformer's model width). None: 48 for every text student, so
    # they differ only in their body.
    embed_dim: int | None = None
    # Body width. None: per student (textcnn: filters per window, 100 as in Kim 2014; tiny-transformer:
    # feed-forward width, 4 x embed_dim; bow-mlp: hidden width 256; small-cnn: channels of the last block, 128).
    width: int | None = None
    # Body depth. None: per student (tiny-transformer 2 encoder layers, bow-mlp 1 hidden layer, small-cnn 3
    # conv blocks); textcnn has one conv layer by design and ignores it.
    layers: int | None = None
    # Dropout on the penultimate features (inside the blocks for tiny-transformer; timm's drop_rate). Light,
    # because the AFT term already regularises those features; Kim 2014 used 0.5 without such a term.
    dropout: float = 0.1
    # Square input size for image students. None: small-cnn takes the size of the first training image
    # (8x8 digits stay 8x8), timm takes the model's data-config input size.
    image_size: int | None = None
    # A local timm weights file (safetensors / torch.save state dict) or a folder holding one. None: random init.
    pretrained: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_length >= 1, "max_length must be at least 1"),
            (self.vocab_size >= 3, "vocab_size must be at least 3 (PAD, UNK and one token)"),
            (self.embed_dim is None or self.embed_dim >= 1, "embed_dim must be positive"),
            (self.width is None or self.width >= 1, "width must be positive"),
            (self.layers is None or self.layers >= 0, "layers must be zero or more"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.image_size is None or self.image_size >= 1, "image_size must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise AftpipeError(f"student config: {message}; fix the value in the student options.")

    def with_defaults(self, defaults: dict[str, Any]) -> StudentConfig:
        """This config with every None field that `defaults` names filled in."""
        fills = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fills)


class Student(nn.Module):
    """Base of every student: `features(batch) -> (B, num_features)`, `head(h) -> (B, num_classes)`.

    Subclasses set `modality`, `DEFAULTS`, build `self.classifier` (or override `head`), and implement
    `features`, `encode`, `create` (from training data) and `_spec_extra` (what `__init__` needs besides
    num_classes and cfg, as JSON)."""

    modality: ClassVar[Modality]
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, student: str, num_classes: int, num_features: int, cfg: StudentConfig) -> None:
        super().__init__()
        self.student = student  # the spec string it was built from, e.g. "textcnn" or "timm:resnet10t"
        self.num_classes = num_classes
        self.num_features = num_features
        self.cfg = cfg

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
        return cls(spec["student"], spec["num_classes"], StudentConfig(**spec["config"]), **extra)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (B, L, D) over the positions where mask (B, L) is nonzero; zeros for an empty row."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)
