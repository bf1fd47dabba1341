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

from aftpipe.errors import AftpipeError
from aftpipe.methods.teacher import fit_linear_head, head_accuracy


@dataclass(frozen=True)
class MethodConfig:
    # Regulariser weight. Measured here (MiniLM features, small CNN students): useful β ≤ 1 for AFT and
    # β ≥ 3 hurt, although the AFT README's example uses β=10, so grids reach down to 0.01.
    beta: float = 1.0
    state_lr: float = 1e-2  # lr of the method's own parameters (AFT's s, KD's W); the official AFT prior_lr
    tau: float = 4.0  # softmax temperature of kd_logit / tokt (Hinton et al. use 1–20; 4 is a common middle)
    teacher_hidden: int = 0  # kd_logit / tokt teacher head: 0 = linear, > 0 = MLP with this hidden width
    distill_fraction: float = 0.5  # tokt: share of the steps spent distilling before fine-tuning on labels
    rkd_distance_weight: float = 1.0  # Park et al.'s defaults: distance 1, angle 2
    rkd_angle_weight: float = 2.0
    rkd_angle_rows: int = 128  # RKD's O(B³) angle term over at most this many rows of a batch (all of a 128 batch)

    def check(self) -> None:
        """Refuse values no method can use, naming the CLI option to change."""
        if not self.beta >= 0:  # `not >=` also catches nan
            raise AftpipeError(f"--beta must be ≥ 0, got {self.beta:g}")
        if not self.state_lr >= 0:
            raise AftpipeError(f"--state-lr must be ≥ 0, got {self.state_lr:g}")
        if not self.tau > 0:
            raise AftpipeError(f"--tau must be > 0, got {self.tau:g}")
        if self.teacher_hidden < 0:
            raise AftpipeError(f"--teacher-hidden must be ≥ 0 (0 = linear teacher), got {self.teacher_hidden}")
        if not 0 <= self.distill_fraction <= 1:
            raise AftpipeError(f"--distill-fraction must be in [0, 1], got {self.distill_fraction:g}")
        if self.rkd_angle_rows < 3:
            raise AftpipeError(f"rkd_angle_rows must be ≥ 3 (an angle needs three rows), got {self.rkd_angle_rows}")
        if not (self.rkd_distance_weight >= 0 and self.rkd_angle_weight >= 0):
            raise AftpipeError(
                f"RKD weights must be ≥ 0, got distance {self.rkd_distance_weight:g} "
                f"and angle {self.rkd_angle_weight:g}"
            )


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
    uses_student: ClassVar[bool] = True  # False for linear_probe: the loop trains a head on φ itself
    needs_teacher: ClassVar[bool] = False  # the loop calls fit_teacher(train_phi, train_y) before training
    uses_unlabeled: ClassVar[bool] = False  # the term means something on rows with y == -1
    uses_features: ClassVar[bool] = True  # False for `none`: it can train without a feature store

    def __init__(self, cfg: MethodConfig, student_dim: int, feature_dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.student_dim = int(student_dim)
        self.feature_dims = tuple(int(d) for d in feature_dims)
        self.num_classes = int(num_classes)
        if self.uses_features and sum(self.feature_dims) <= 0:
            raise AftpipeError(f"method `{self.name}` needs cached features; pass --features STORE")

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

    def extra_repr(self) -> str:
        return f"student_dim={self.student_dim}, feature_dims={list(self.feature_dims)}, beta={self.cfg.beta:g}"


def zero(like: Tensor) -> Tensor:
    """A scalar 0 on `like`'s device, for terms a method does not have."""
    return like.new_zeros((), dtype=torch.float32)


class TeacherMethod(Method):
    """A method distilling from a frozen head on φ (kd_logit, tokt): the head is fitted once by
    `fit_teacher` on the labeled training rows, then only its predictions are used."""

    needs_teacher = True
    uses_unlabeled = True

    def __init__(self, cfg: MethodConfig, student_dim: int, feature_dims: Sequence[int], num_classes: int) -> None:
        super().__init__(cfg, student_dim, feature_dims, num_classes)
        self.register_module("teacher", None)
        self._teacher_info: dict = {}

    def fit_teacher(self, phi: Tensor, y: Tensor, seed: int = 0) -> None:
        head = fit_linear_head(phi, y, self.num_classes, hidden=self.cfg.teacher_hidden, seed=seed)
        head.requires_grad_(False)  # frozen: the optimizer never moves it
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
