"""TOKT, task-oriented knowledge transfer (Vemulapalli, Pouransari, Faghri, Mehta, Farajtabar, Rastegari,
Tuzel, "Knowledge Transfer from Vision Foundation Models for Efficient Training of Small Task-specific
Models", ICML 2024, arXiv:2311.18237).

(1) adapt the foundation model to the task — here a head on cached φ, linear or MLP; (2) distill its task
predictions into the student on a transfer set that may include unlabeled examples; (3) fine-tune the
student on the labels.
"""

from __future__ import annotations

from torch import Tensor

from aftpipe.config import TOKTOptions
from aftpipe.methods.base import LossTerms, TeacherMethod, masked_cross_entropy, zero
from aftpipe.methods.losses import logit_kd_loss


class TOKT(TeacherMethod):
    """TOKT: distill a head on φ into the student on all rows, then fine-tune on the labels.

    Vemulapalli et al. ICML 2024. For progress < distill_fraction the loss is β · logit KD to the φ-head
    on every row (labeled and unlabeled: the transfer set); afterwards plain CE on labeled rows. During
    distillation `ce` is reported but not trained on.

    CLI: `aftpipe train ... --method tokt --distill-fraction 0.5 --tau 4 [--teacher-hidden 512]`
    """

    name = "tokt"
    Options = TOKTOptions
    cfg: TOKTOptions
    always_unlabeled = True  # distilling on the transfer set is the method, not an option

    def distilling(self, progress: float) -> bool:
        return progress < self.cfg.distill_fraction

    def forward(self, h: Tensor, logits: Tensor, phi: Tensor, y: Tensor, progress: float = 0.0) -> LossTerms:
        ce = masked_cross_entropy(logits, y)
        if self.distilling(progress):
            reg = logit_kd_loss(logits, self.teacher_logits(phi), self.cfg.tau)
            return LossTerms(total=self.cfg.beta * reg, ce=ce.detach(), reg=reg)
        return LossTerms(total=ce, ce=ce, reg=zero(logits))

    def summary(self) -> dict:
        return {**self._teacher_info, "distill_fraction": self.cfg.distill_fraction}
