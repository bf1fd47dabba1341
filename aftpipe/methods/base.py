"""What a method is to the training loop: a module that turns one batch into loss terms.

The loop, per batch:

    h = student.features(x)                            # (B, d)
    logits = student.head(h)                           # (B, C)
    terms = method(h, logits, phi, y, progress)        # phi (B, D) all sources concatenated; y = -1: unlabeled
    terms.total.backward()

and gives `method.parameters()` (AFT's s, KD's W, ...) their own optimizer group at `cfg.state_lr`.
Methods with `needs_teacher` get `fit_teacher(train_phi, train_y)` once before training; their teacher
is frozen, so the optimizer skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from aftpipe.config import Config, NoOptions, LogitKDOptions, TransferOptions
from aftpipe.errors import AftpipeError, option_hint
from aftpipe.methods.teacher import fit_linear_head, head_accuracy


@dataclass
class LossTerms:
    """`total` is what the loop backpropagates; `ce` and `reg` (unweighted, before β) are for logging."""

    total: Tensor
    ce: Tensor
    reg: Tensor

    def floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "ce": float(self.ce.detach()), "reg": float(self.reg.detach())}


def masked_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over the labeled rows (y ≥ 0); 0 (still differentiable) when there are none.

    Written without a data-dependent branch or index, so it never waits on the GPU."""
    labeled = y >= 0
    per_row = F.cross_entropy(logits, torch.where(labeled, y, torch.zeros_like(y)), reduction="none")
    return (per_row * labeled).sum() / labeled.sum().clamp_min(1)


class Method(nn.Module):
    """A training objective: cross-entropy plus a method-specific term, and that term's learnable state."""

    name: ClassVar[str]
    uses_student: ClassVar[bool] = True  # False for linear_probe: a head on φ itself (aftpipe.probe)
    needs_teacher: ClassVar[bool] = False  # the loop calls fit_teacher(train_phi, train_y) before training
    uses_unlabeled: ClassVar[bool] = False  # the term means something on rows with y == -1
    always_unlabeled: ClassVar[bool] = False  # the unlabeled transfer set is part of the method (tokt)
    uses_features: ClassVar[bool] = True  # False for `none`: it can train without a feature store
    # The options this method reads (config.py); it is handed its own part of the flat MethodConfig, and an
    # option it does not declare is refused by name where a config enters the API (`check_options`)
    Options: ClassVar[type[Config]] = NoOptions

    @classmethod
    def regularised(cls) -> bool:
        """Whether the method has a transfer term to weigh: a β, and so controls (not `none`, not the probe)."""
        return issubclass(cls.Options, TransferOptions)

    def __init__(self, cfg: Config, student_dim: int, feature_dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.cfg = self.Options.of(cfg)
        self.student_dim = int(student_dim)
        self.feature_dims = tuple(int(d) for d in feature_dims)
        self.num_classes = int(num_classes)
        if self.uses_features and sum(self.feature_dims) <= 0:
            raise AftpipeError(f"method `{self.name}` needs cached features; pass {option_hint('features', 'STORE')}")

    @property
    def feature_dim(self) -> int:
        return sum(self.feature_dims)

    def fit_teacher(self, phi: Tensor, y: Tensor, seed: int = 0) -> None:
        """Fit what the method needs from the cached training features; nothing unless `needs_teacher`."""

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor, y: Tensor, progress: float = 0.0) -> LossTerms:
        raise NotImplementedError

    def summary(self) -> dict:
        """JSON-able facts about the learned state, for metrics.json."""
        return {}

    @torch.no_grad()
    def regulariser(self, h: Tensor, logits: Tensor, phi: Tensor) -> Tensor:
        """The transfer term alone (unweighted, as if every row were unlabeled and training had just begun):
        what the diagnostics track on hold-out batches."""
        y = torch.full((h.shape[0],), -1, dtype=torch.long, device=h.device)
        return self(h, logits, phi, y, 0.0).reg

    def regulariser_floor(self, phi: Tensor) -> Tensor | None:
        """The regulariser's value for a student that learned nothing, where that is defined (AFT)."""
        return None

    def extra_repr(self) -> str:
        return f"student_dim={self.student_dim}, feature_dims={list(self.feature_dims)}, {self.cfg}"


def zero(like: Tensor) -> Tensor:
    """A scalar 0 on `like`'s device, for terms a method does not have."""
    return like.new_zeros((), dtype=torch.float32)


class TeacherMethod(Method):
    """A method distilling from a frozen head on φ (kd_logit, tokt): the head is fitted once by
    `fit_teacher` on the labeled training rows, then only its predictions are used."""

    needs_teacher = True
    uses_unlabeled = True
    Options = LogitKDOptions
    cfg: LogitKDOptions

    def __init__(self, cfg: Config, student_dim: int, feature_dims: Sequence[int], num_classes: int) -> None:
        super().__init__(cfg, student_dim, feature_dims, num_classes)
        self.register_module("teacher", None)
        self._teacher_info: dict = {}

    def fit_teacher(self, phi: Tensor, y: Tensor, seed: int = 0) -> None:
        self.set_teacher(fit_linear_head(phi, y, self.num_classes, hidden=self.cfg.teacher_hidden, seed=seed), phi, y)

    def set_teacher(self, head: nn.Module, phi: Tensor, y: Tensor) -> None:
        """Use `head` (fitted on the training rows (phi, y), or loaded from the head cache) as the teacher."""
        head = head.to(phi.device).requires_grad_(False)  # frozen: the optimizer never moves it
        self.teacher = head
        self._teacher_info = {"teacher_hidden": self.cfg.teacher_hidden, "teacher_c": head.c,
                              "teacher_train_acc": head_accuracy(head, phi, y)}

    def teacher_logits(self, phi: Tensor) -> Tensor:
        if self.teacher is None:
            raise RuntimeError(f"method `{self.name}` has no teacher: call fit_teacher(train_phi, train_y) before training")
        with torch.no_grad():
            return self.teacher(phi)

    def summary(self) -> dict:
        return dict(self._teacher_info)
