"""The two references without a regulariser: cross-entropy alone, and a linear probe on φ (aftpipe.probe)."""

from __future__ import annotations

from torch import Tensor

from aftpipe.errors import AftpipeError
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

    Not a loss: the name's entry in the registry, so configs validate it; `aftpipe.api.train` fits it with
    its own recipe (aftpipe.probe). Not a small model at inference (it needs the foundation model).

    CLI: `aftpipe train ... --method linear_probe`
    """

    name = "linear_probe"
    uses_student = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AftpipeError("linear_probe is not trained as a student; fit it with aftpipe.train (aftpipe.probe)")
