"""Distillation baselines AFT is compared with: feature KD, relational KD, and logit KD from a head on φ."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from torch import Tensor

from aftpipe.config import Config, RKDOptions, StateOptions
from aftpipe.methods.base import LossTerms, Method, TeacherMethod, masked_cross_entropy
from aftpipe.methods.losses import feature_kd_loss, logit_kd_loss, rkd_loss


class KDFeature(Method):
    """Feature distillation: CE + β · mean((W h − φ)²) with a learned map W: d → D.

    FitNets (Romero et al. ICLR 2015); the KD baseline of Qiu et al. 2024. W is learned at `state_lr`.
    Penalises forgetting any pretrained feature.

    The official AFT code trains W at the *model's* lr (run.py overrides prior_lr for `kd`); here it
    follows `state_lr` like every method's state.

    CLI: `aftpipe train ... --method kd_feature --beta 1`
    """

    name = "kd_feature"
    Options = StateOptions
    cfg: StateOptions
    uses_unlabeled = True

    def __init__(self, cfg: Config, student_dim: int, feature_dims: Sequence[int], num_classes: int) -> None:
        super().__init__(cfg, student_dim, feature_dims, num_classes)
        self.W = nn.Linear(self.student_dim, self.feature_dim)

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor, y: Tensor, progress: float = 0.0) -> LossTerms:
        ce = masked_cross_entropy(logits, y)
        reg = feature_kd_loss(h, phi, self.W)
        return LossTerms(total=ce + self.cfg.beta * reg, ce=ce, reg=reg)


class RKD(Method):
    """Relational KD: CE + β · (distance + 2·angle) relation losses between h and φ.

    Park et al. CVPR 2019.

    No learned state: relations compare distances and angles, so d and D may differ. The angle term is
    O(B³): with an unlabeled batch added (B = 256) it runs over `rkd_angle_rows` (128) evenly spaced rows.

    CLI: `aftpipe train ... --method rkd --beta 1`
    """

    name = "rkd"
    Options = RKDOptions
    cfg: RKDOptions
    uses_unlabeled = True

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor, y: Tensor, progress: float = 0.0) -> LossTerms:
        ce = masked_cross_entropy(logits, y)
        reg = rkd_loss(h, phi, self.cfg.rkd_distance_weight, self.cfg.rkd_angle_weight, self.cfg.rkd_angle_rows)
        return LossTerms(total=ce + self.cfg.beta * reg, ce=ce, reg=reg)


class KDLogit(TeacherMethod):
    """Logit KD from a teacher head on cached φ: CE + β · τ²·KL(teacher ‖ student).

    Hinton et al. 2015. CE is over labeled rows; the KD term, at temperature τ, over every row,
    unlabeled ones too. The teacher is `fit_linear_head` on the training φ (linear or MLP), frozen.

    CLI: `aftpipe train ... --method kd_logit --beta 1 --tau 4 [--teacher-hidden 512]`
    """

    name = "kd_logit"

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor, y: Tensor, progress: float = 0.0) -> LossTerms:
        ce = masked_cross_entropy(logits, y)
        reg = logit_kd_loss(logits, self.teacher_logits(phi), self.cfg.tau)
        return LossTerms(total=ce + self.cfg.beta * reg, ce=ce, reg=reg)
