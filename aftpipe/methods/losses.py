"""The regularisers as pure functions: tensors in, a scalar to *minimise* out; no state, no registry.

Each one is tested against a naive reference in tests/methods/test_losses.py. The learnable state they
take (AFT's log-weights `s`, KD's map `W`, the primal form's `V`) lives in the method modules beside this
file; here it is just an argument.

All of them run in at least float32 with autocast switched off: under bf16 autocast the B×B cosine
kernels lose exactly the small differences AFT is made of, and these losses cost little next to the
student's forward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

# The numbers of the official AFT code (github.com/amazon-science/adaptive-feature-transfer, prior.py,
# KernelPrior.log_prob, read at commits 5e2cba4 and 9ef13d8): rows are divided by (‖row‖ + 1e-8), and the
# loss is (mean(dk²) + 1e-8) ** 0.5. Same here, so β values carry over.
NORM_EPS = 1e-8
RMS_EPS = 1e-8

# lenscloth/RKD metric/utils.py `pdist`: squared distances are clamped at 1e-12 before the square root
# (so the root has a finite gradient) and the diagonal is then set to 0.
PDIST_EPS = 1e-12

KernelForm = Literal["auto", "gram", "feature"]
Linear = Callable[[Tensor], Tensor]  # an nn.Linear, or any map of the last dimension
_F = TypeVar("_F", bound=Callable[..., Tensor])


def _full_precision(fn: _F) -> _F:
    """Run `fn` with autocast off for the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast(device_type=args[0].device.type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _upcast(*xs: Tensor | None) -> tuple[Tensor | None, ...]:
    """Cast to a common dtype of at least float32 (float64 stays float64, for tests)."""
    dtype = torch.float32
    for x in xs:
        if x is not None:
            dtype = torch.promote_types(dtype, x.dtype)
    return tuple(None if x is None else x.to(dtype) for x in xs)


def _apply(m: Linear | Tensor, x: Tensor) -> Tensor:
    """`m(x)` for a module, `x @ mᵀ` for a (out, in) weight matrix."""
    return x @ m.to(x.dtype).T if isinstance(m, Tensor) else m(x)


def _check_pair(h: Tensor, phi: Tensor, s: Tensor | None = None) -> None:
    if h.ndim != 2 or phi.ndim != 2:
        raise ValueError(f"h and phi must be (B, d) and (B, D); got {tuple(h.shape)} and {tuple(phi.shape)}")
    if h.shape[0] != phi.shape[0]:
        raise ValueError(f"h has {h.shape[0]} rows but phi has {phi.shape[0]}")
    if s is not None and tuple(s.shape) != (phi.shape[1],):
        raise ValueError(f"s must have shape ({phi.shape[1]},) to weight phi's features; got {tuple(s.shape)}")


def _centre_normalise(x: Tensor, eps: float) -> Tensor:
    """Centre each feature over the batch, then scale each row to unit L2 norm (+eps): cosine-kernel rows."""
    x = x - x.mean(dim=0, keepdim=True)
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)


def _aft_rows(h: Tensor, phi: Tensor, s: Tensor | None, eps: float) -> tuple[Tensor, Tensor]:
    _check_pair(h, phi, s)
    h, phi, s = _upcast(h, phi, s)
    t = phi if s is None else phi * torch.sigmoid(s)  # adaptive per-feature weights in (0, 1)
    return _centre_normalise(h, eps), _centre_normalise(t, eps)


def kernel_form_for(batch: int, d: int, D: int) -> Literal["gram", "feature"]:
    """The cheaper way to get ‖ĥĥᵀ − t̂t̂ᵀ‖²_F for these shapes.

    B×B kernels cost ~B²(d+D) multiply-adds; the Gram identity ~B(d² + dD + D²)."""
    return "feature" if batch * (d + D) > d * d + d * D + D * D else "gram"


@_full_precision
def aft_kernel_loss_gram(h: Tensor, phi: Tensor, s: Tensor | None, eps: float = NORM_EPS) -> Tensor:
    """AFT's kernel regulariser through the B×B kernels themselves (see `aft_kernel_loss`)."""
    hn, tn = _aft_rows(h, phi, s, eps)
    dk = hn @ hn.T - tn @ tn.T
    return torch.sqrt(dk.pow(2).mean() + RMS_EPS)


@_full_precision
def aft_kernel_loss_feature(h: Tensor, phi: Tensor, s: Tensor | None, eps: float = NORM_EPS) -> Tensor:
    """AFT's kernel regulariser through the d×d, D×D, d×D Grams (see `aft_kernel_loss`):
    ‖ĥĥᵀ − t̂t̂ᵀ‖²_F = ‖ĥᵀĥ‖²_F + ‖t̂ᵀt̂‖²_F − 2‖ĥᵀt̂‖²_F, O(B(d+D)²) instead of O(B²(d+D)).

    The identity subtracts large terms; rounding can leave a tiny negative where the kernels agree, so the
    sum is clamped at 0 (the 1e-8 inside the root then sets the floor, as in the B×B form). In float32
    that rounding is ~1e-7 of the mean, so R carries ~3e-4 of noise where the kernels almost agree;
    training values of R (0.05–0.5) are unaffected."""
    hn, tn = _aft_rows(h, phi, s, eps)
    sq = (hn.T @ hn).pow(2).sum() + (tn.T @ tn).pow(2).sum() - 2 * (hn.T @ tn).pow(2).sum()
    return torch.sqrt(sq.clamp_min(0) / hn.shape[0] ** 2 + RMS_EPS)


def aft_kernel_loss(
    h: Tensor, phi: Tensor, s: Tensor | None, eps: float = NORM_EPS, form: KernelForm = "auto"
) -> Tensor:
    """AFT's kernel regulariser R(θ, s) (Qiu et al., "Transferring Knowledge from Large Foundation Models
    to Small Downstream Models", ICML 2024, arXiv:2406.07337; the official code's `aft` / KernelPrior).

        t = φ ⊙ σ(s);  ĥ, t̂ = rows of the batch-centred h, t over their L2 norm (+eps)
        R = sqrt(mean((ĥĥᵀ − t̂t̂ᵀ)²) + 1e-8)

    h (B, d) student features; phi (B, D) cached features; s (D,) log-weights (None: all weights 1).
    R compares which examples look alike, so it is invariant to rotations and positive rescaling of h.
    `form="auto"` computes it the cheaper way for the shapes (`kernel_form_for`); both give the same value.

    CLI: `aftpipe train ... --method aft --beta 0.3`
    """
    if form == "auto":
        form = kernel_form_for(h.shape[0], h.shape[-1], phi.shape[-1])
    if form == "gram":
        return aft_kernel_loss_gram(h, phi, s, eps)
    if form == "feature":
        return aft_kernel_loss_feature(h, phi, s, eps)
    raise ValueError(f"form must be 'auto', 'gram' or 'feature', got {form!r}")


@_full_precision
def aft_kernel_floor(phi: Tensor, s: Tensor | None, eps: float = NORM_EPS) -> Tensor:
    """R of a student that learned nothing: the identity kernel (every example like itself only) against
    the kernel of φ ⊙ σ(s). A trained student's R near this level says the kernel term carried nothing over.

        R_floor = sqrt(mean((I − t̂t̂ᵀ)²) + 1e-8)
    """
    phi, s = _upcast(phi, s)
    tn = _centre_normalise(phi if s is None else phi * torch.sigmoid(s), eps)
    dk = torch.eye(tn.shape[0], dtype=tn.dtype, device=tn.device) - tn @ tn.T
    return torch.sqrt(dk.pow(2).mean() + RMS_EPS)


@_full_precision
def aft_primal_loss(h: Tensor, phi: Tensor, s: Tensor | None, V: Linear | Tensor) -> Tensor:
    """AFT's primal (feature-space) regulariser: R = mean((V t̄ − h̄)²), t = φ (or φ ⊙ σ(s) if s is given),
    bars = centred over the batch, mean over batch *and* the d student features; V: D → d is learned
    jointly with the student, so training minimises R over V (Qiu et al. 2024, arXiv:2406.07337; the
    official code's `aft_no_kernel` / FeaturePrior).

    The official FeaturePrior applies V to the raw φ (no σ(s)), and so does the `aft_primal` method
    (pass s=None): a learned V already absorbs any per-feature weight. Only the student features φ cannot
    explain linearly are penalised.

    CLI: `aftpipe train ... --method aft_primal --beta 0.3`
    """
    _check_pair(h, phi, s)
    h, phi, s = _upcast(h, phi, s)
    t = phi if s is None else phi * torch.sigmoid(s)
    pred = _apply(V, t)
    if pred.shape != h.shape:
        raise ValueError(f"V maps phi to {tuple(pred.shape)}, but h is {tuple(h.shape)}")
    pred = pred - pred.mean(dim=0, keepdim=True)
    return (pred - (h - h.mean(dim=0, keepdim=True))).pow(2).mean()


@_full_precision
def feature_kd_loss(h: Tensor, phi: Tensor, W: Linear | Tensor) -> Tensor:
    """Feature distillation: mean((W h − φ)²) over batch and the D features, W: d → D learned (FitNets,
    Romero et al. ICLR 2015; the AFT paper's KD baseline, official code's `kd` / KDPrior). It penalises
    forgetting *any* pretrained feature, which is what AFT's σ(s) avoids.

    CLI: `aftpipe train ... --method kd_feature --beta 1`
    """
    _check_pair(h, phi)
    h, phi = _upcast(h, phi)
    pred = _apply(W, h)
    if pred.shape != phi.shape:
        raise ValueError(f"W maps h to {tuple(pred.shape)}, but phi is {tuple(phi.shape)}")
    return (pred - phi).pow(2).mean()


def _pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances (B, B), diagonal exactly 0, finite gradient everywhere (lenscloth/RKD `pdist`)."""
    sq = x.pow(2).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(PDIST_EPS).sqrt()
    return d * (1 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))


def _mean_normalised_distances(x: Tensor) -> Tensor:
    d = _pairwise_distances(x)
    # RKD divides by the mean of the positive distances; after the clamp those are exactly the
    # off-diagonal ones, so sum / (B(B−1)) is that mean without a data-dependent (syncing) index.
    n = max(x.shape[0] * (x.shape[0] - 1), 1)
    return d / (d.sum() / n).clamp_min(PDIST_EPS)


def _triplet_cosines(x: Tensor) -> Tensor:
    """cos of the angle at vertex i between (x_j − x_i) and (x_k − x_i), all (i, j, k), flattened; 0 where
    x_j or x_k coincides with x_i (j = i included), as normalising a zero difference vector makes it.

    From the Gram matrix G of the batch, not from the B×B×d difference vectors (the authors' code, O(B³d)):
    ⟨x_j − x_i, x_k − x_i⟩ = G_jk − G_ij − G_ik + G_ii and ‖x_j − x_i‖² = G_jj − 2G_ij + G_ii, so the cost is
    O(B²d + B³), d times less. G is taken in float64 from rows centred on the batch mean (angles do not
    move), so the sums cancel little: the cosines agree with the difference-vector form to ~1e-6 in float32
    and ~1e-15 in float64. Points closer than 1e-6 of their distance from the batch mean count as coinciding
    (below that a difference vector's direction is rounding noise), exact duplicates included."""
    x64 = x.to(torch.float64)
    x64 = x64 - x64.mean(dim=0, keepdim=True)
    G64 = x64 @ x64.T
    sq64 = G64.diagonal()
    d2 = sq64[:, None] + sq64[None, :] - 2 * G64  # (i, j): ‖x_j − x_i‖²
    apart = d2 > 1e-12 * (sq64[:, None] + sq64[None, :])  # False on the diagonal: G_ii + G_ii − 2G_ii is exactly 0
    G = G64.to(x.dtype)  # the B³ part in x's precision: after centring, float32 is accurate enough
    inv = torch.where(apart, torch.where(apart, d2, 1.0).rsqrt(), 0.0).to(x.dtype)  # 1/‖x_j − x_i‖, 0 if coinciding
    dot = G[None, :, :] - G[:, :, None] - G[:, None, :] + G.diagonal()[:, None, None]  # (i, j, k)
    return (dot * inv[:, :, None] * inv[:, None, :]).reshape(-1)


@_full_precision
def rkd_loss(h: Tensor, phi: Tensor, distance_weight: float = 1.0, angle_weight: float = 2.0,
             angle_rows: int | None = None) -> Tensor:
    """Relational KD (Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019):
    distance_weight · smoothL1(ψ_D(h), ψ_D(φ)) + angle_weight · smoothL1(ψ_A(h), ψ_A(φ)), where ψ_D are the
    pairwise distances divided by their mean and ψ_A the cosines of every triplet's angle (B³ of them,
    degenerate ones included, as in the authors' code). φ is the teacher side and gets no gradient.
    Weights 1 and 2 are the paper's; the AFT code's RKD baseline used (dist + 2·angle) / 2, i.e. half
    the β. Memory and time are O(B²(d+D) + B³): fine for batches of a few hundred. `angle_rows` = k < B
    takes the angle term over k evenly spaced rows of the batch (a random subset, since batches are
    shuffled, spanning labeled and unlabeled parts alike): O(k³) instead of O(B³).

    CLI: `aftpipe train ... --method rkd --beta 1`
    """
    _check_pair(h, phi)
    h, phi = _upcast(h, phi)
    sub = slice(None)  # the rows of the angle term
    if angle_rows is not None and angle_rows < len(h):
        sub = torch.linspace(0, len(h) - 1, max(angle_rows, 3), device=h.device).round().long()
    with torch.no_grad():
        t_dist = _mean_normalised_distances(phi)
        t_angle = _triplet_cosines(phi[sub]) if angle_weight else None
    loss = distance_weight * F.smooth_l1_loss(_mean_normalised_distances(h), t_dist)
    if angle_weight:
        loss = loss + angle_weight * F.smooth_l1_loss(_triplet_cosines(h[sub]), t_angle)
    return loss


@_full_precision
def logit_kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015):
    τ² · KL(softmax(t/τ) ‖ softmax(s/τ)), averaged over rows ("batchmean"); the teacher gets no gradient.
    The τ² keeps the gradient's scale independent of τ.

    CLI: `aftpipe train ... --method kd_logit --beta 1 --tau 4`
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}")
    s, t = _upcast(student_logits, teacher_logits.detach())
    log_p_s = F.log_softmax(s / tau, dim=-1)
    log_p_t = F.log_softmax(t / tau, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * tau**2
