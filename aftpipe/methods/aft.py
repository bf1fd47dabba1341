"""AFT, Adaptive Feature Transfer (Qiu, Han, Maddix, Zhang, Wang, Wilson, ICML 2024, arXiv:2406.07337).

The student is pulled towards the *task-relevant subset* of the cached features: learned per-feature
weights σ(s) decide which pretrained features the student's kernel has to reproduce, and cross-entropy
decides which of them help the task. `aft` is the paper's (and the official code's default) kernel form;
`aft_primal` its feature-space form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from aftpipe.config import Config, StateOptions
from aftpipe.methods.base import LossTerms, Method, masked_cross_entropy
from aftpipe.methods.losses import aft_kernel_floor, aft_kernel_loss, aft_primal_loss

__all__ = ["AFT", "AFTPrimal", "aft_kernel_loss", "aft_primal_loss"]


class AFT(Method):
    """AFT, kernel form: CE + β · RMS difference of the batch cosine kernels of h and φ ⊙ σ(s).

    Qiu et al. ICML 2024, the official code's `aft`.

    s (one log-weight per feature of every source, initialised 0, i.e. σ = 0.5) is learned on the same
    loss at `state_lr`; it gets gradient only from the regulariser. The regulariser uses every row,
    unlabeled ones too.

    CLI: `aftpipe train ... --method aft --beta 0.3`
    """

    name = "aft"
    Options = StateOptions
    cfg: StateOptions
    uses_unlabeled = True

    def __init__(self, cfg: Config, student_dim: int, feature_dims: Sequence[int], num_classes: int) -> None:
        super().__init__(cfg, student_dim, feature_dims, num_classes)
        self.s = nn.Parameter(torch.zeros(self.feature_dim))

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor, y: Tensor, progress: float = 0.0) -> LossTerms:
        ce = masked_cross_entropy(logits, y)
        reg = aft_kernel_loss(h, phi, self.s)
        return LossTerms(total=ce + self.cfg.beta * reg, ce=ce, reg=reg)

    def regulariser_floor(self, phi: Tensor) -> Tensor:
        return aft_kernel_floor(phi, self.s.detach())

    def summary(self) -> dict:
        """Per source (in feature_dims order): mean σ(s) and the fraction of its features with σ(s) > 0.5 —
        which model the task used."""
        w = torch.sigmoid(self.s.detach().float()).cpu()
        sources = [
            {
                "source": i,
                "dim": len(part),
                "sigma_mean": float(part.mean()),
                "frac_above_half": float((part > 0.5).float().mean()),
            }
            for i, part in enumerate(torch.split(w, self.feature_dims))
        ]
        return {"sigma_mean": float(w.mean()), "sources": sources}


class AFTPrimal(Method):
    """AFT, primal form: CE + β · min_V mean((V φ̄ − h̄)²) with a learned map V: D → d.

    Qiu et al. ICML 2024, the official code's `aft_no_kernel`; V is learned jointly at `state_lr`.

    As in the official code (FeaturePrior, `aft_no_kernel`), V reads the raw φ — there is no σ(s): a
    learned linear map already weights each feature.

    CLI: `aftpipe train ... --method aft_primal --beta 0.3`
    """

    name = "aft_primal"
    Options = StateOptions
    cfg: StateOptions
    uses_unlabeled = True

    def __init__(self, cfg: Config, student_dim: int, feature_dims: Sequence[int], num_classes: int) -> None:
        super().__init__(cfg, student_dim, feature_dims, num_classes)
        self.V = nn.Linear(self.feature_dim, self.student_dim)  # nn.Linear's default init, as official

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor, y: Tensor, progress: float = 0.0) -> LossTerms:
        ce = masked_cross_entropy(logits, y)
        reg = aft_primal_loss(h, phi, None, self.V)
        return LossTerms(total=ce + self.cfg.beta * reg, ce=ce, reg=reg)

    def summary(self) -> dict:
        """Per source: its share of ‖V‖²_F (how much of φ the map uses from that model)."""
        col = self.V.weight.detach().float().pow(2).sum(dim=0).cpu()
        total = float(col.sum()) or 1.0
        sources = [
            {"source": i, "dim": len(part), "weight_share": float(part.sum()) / total}
            for i, part in enumerate(torch.split(col, self.feature_dims))
        ]
        return {"sources": sources}
