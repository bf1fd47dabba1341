"""The two references without a regulariser: cross-entropy alone, and a linear probe on φ."""

from __future__ import annotations

from torch import Tensor

from aftpipe.methods.base import LossTerms, Method, masked_cross_entropy, zero


class NoTransfer(Method):
    """Cross-entropy only: standard training without a transfer term.

    From scratch, or from the student's own pretrained weights when it has them.

    CLI: `aftpipe train ... --method none`
    """

    name = "none"
    uses_features = False

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor | None, y: Tensor, progress: float = 0.0) -> LossTerms:
        ce = masked_cross_entropy(logits, y)
        return LossTerms(total=ce, ce=ce, reg=zero(logits))


class LinearProbe(Method):
    """Linear probe on φ itself: the reference a student tries to approach.

    The loop feeds φ as the features and trains only a head on it. Not a small model at inference (it
    needs the foundation model).

    CLI: `aftpipe train ... --method linear_probe`
    """

    name = "linear_probe"
    uses_student = False

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor, y: Tensor, progress: float = 0.0) -> LossTerms:
        ce = masked_cross_entropy(logits, y)
        return LossTerms(total=ce, ce=ce, reg=zero(logits))
