"""A classifier head on cached features: the linear-probe reference and the teacher of `kd_logit` / `tokt`.

It trains in seconds because the foundation model is not involved: the features are already cached.
The head standardises its input with the training statistics (kept as buffers, so it takes raw φ at
prediction time) and is linear or a one-hidden-layer MLP, trained with Adam and a cosine schedule.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from aftpipe.errors import AftpipeError


class FeatureHead(nn.Module):
    """(φ − mean) / std, then Linear (hidden=0) or Linear-ReLU-Linear."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        else:
            self.net = nn.Linear(in_dim, num_classes)

    def forward(self, phi: Tensor) -> Tensor:
        return self.net((phi.to(self.mean.dtype) - self.mean) / self.std)


def fit_linear_head(
    phi: Tensor,
    y: Tensor,
    num_classes: int,
    hidden: int = 0,
    epochs: int = 30,
    lr: float = 0.1,
    weight_decay: float | None = None,
    seed: int = 0,
    batch_size: int = 4096,
    min_steps: int = 500,
) -> FeatureHead:
    """Fit a `FeatureHead` on the labeled rows (y ≥ 0) of cached features; deterministic given `seed`.

    Large minibatches (4096) keep 60k×384 features at ~1.3 s on two CPU cores; a small set is trained
    full-batch for at least `min_steps` Adam steps so it is not under-fitted. weight_decay is the L2
    penalty on the weights (default 1/n: scikit-learn's LogisticRegression(C=1)). Measured on
    standardised digits (1,200 rows): Adam at 0.1 with a cosine decay over 500 steps reaches that
    model's optimum objective (0.0765 vs 0.0765) and test accuracy; at 1e-2 it stops short (0.095).
    Trains on phi's device; returns the head in eval mode.
    """
    phi, y = torch.as_tensor(phi), torch.as_tensor(y)
    if phi.ndim != 2 or y.ndim != 1 or len(phi) != len(y):
        raise ValueError(f"phi must be (N, D) and y (N,); got {tuple(phi.shape)} and {tuple(y.shape)}")
    y = y.to(phi.device)
    labeled = y >= 0
    x, t = phi[labeled].float(), y[labeled].long()
    n = len(t)
    if n == 0:
        raise AftpipeError("the teacher head needs labeled rows but every label is -1; train on a split with labels")
    if int(t.max()) >= num_classes:
        raise ValueError(f"label {int(t.max())} is out of range for num_classes={num_classes}")

    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False).clamp_min(1e-6)  # a constant feature stays 0 instead of inf
    xs = (x - mean) / std  # standardise once, not per step; the head does it itself at prediction time

    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        head = FeatureHead(x.shape[1], num_classes, hidden)
    head.mean.copy_(mean.cpu())
    head.std.copy_(std.cpu())
    head.to(x.device)

    bs = min(batch_size, n)
    per_epoch = math.ceil(n / bs)
    total = max(epochs * per_epoch, min_steps)
    # L2 on the weights only (not biases). The default 1/n is scikit-learn's LogisticRegression(C=1):
    # its objective ½‖w‖² + C·Σ loss, divided by C·n, is mean loss + ‖w‖²/(2n).
    wd = 1.0 / n if weight_decay is None else weight_decay
    decay = [p for name, p in head.net.named_parameters() if name.endswith("weight")]
    rest = [p for name, p in head.net.named_parameters() if not name.endswith("weight")]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / total)))
    gen = torch.Generator().manual_seed(seed)
    head.train()
    step = 0
    while step < total:
        perm = torch.randperm(n, generator=gen).to(x.device) if bs < n else None
        for b in range(per_epoch):
            if step == total:
                break
            idx = perm[b * bs : (b + 1) * bs] if perm is not None else slice(None)
            loss = F.cross_entropy(head.net(xs[idx]), t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    opt.zero_grad(set_to_none=True)  # hand back a head without stale gradients
    return head.eval()


@torch.no_grad()
def head_accuracy(head: nn.Module, phi: Tensor, y: Tensor) -> float:
    """Accuracy of `head` on the labeled rows of (phi, y); nan if there are none."""
    y = torch.as_tensor(y).to(phi.device)
    labeled = y >= 0
    if not bool(labeled.any()):
        return float("nan")
    pred = head(phi[labeled]).argmax(dim=-1)
    return float((pred == y[labeled]).float().mean())
