"""The losses against naive references: explicit loops in float64, not the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from aftpipe.errors import AftpipeError
from aftpipe.methods.aft import aft_kernel_loss  # the path the rest of aftpipe imports it from
from aftpipe.methods.losses import (
    aft_kernel_loss_feature,
    aft_kernel_loss_gram,
    aft_primal_loss,
    feature_kd_loss,
    kernel_form_for,
    logit_kd_loss,
    rkd_loss,
)
from aftpipe.methods.teacher import C_GRID, fit_linear_head, fit_torch_head, head_accuracy

FORMS = ["gram", "feature"]


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: intra-op threads only add synchronisation, and on a machine whose cores
    are shared with other jobs that spin-waiting made the teacher tests 50× slower (15 s vs 0.3 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- AFT kernel form


def naive_aft(h: np.ndarray, phi: np.ndarray, s: np.ndarray, eps: float = 1e-8) -> float:
    B = len(h)
    w = [1 / (1 + math.exp(-v)) for v in s]
    t = [[phi[i][k] * w[k] for k in range(len(w))] for i in range(B)]

    def centre_normalise(x):
        cols = len(x[0])
        mean = [sum(x[i][k] for i in range(B)) / B for k in range(cols)]
        rows = []
        for i in range(B):
            c = [x[i][k] - mean[k] for k in range(cols)]
            n = math.sqrt(sum(v * v for v in c))
            rows.append([v / (n + eps) for v in c])
        return rows

    hn, tn = centre_normalise(h), centre_normalise(t)
    acc = 0.0
    for i in range(B):
        for j in range(B):
            k = sum(a * b for a, b in zip(hn[i], hn[j]))
            kt = sum(a * b for a, b in zip(tn[i], tn[j]))
            acc += (k - kt) ** 2
    return math.sqrt(acc / B**2 + 1e-8)


@pytest.mark.parametrize("form", FORMS)
def test_aft_hand_worked_example(form):
    # h = [0, 1, 2] (d=1): centred -1, 0, 1 → rows -1, 0, 1, so K = [[1,0,-1],[0,0,0],[-1,0,1]].
    # φ = [[0,0],[3,0],[0,3]], s = 0: t = φ/2, centred [[-.5,-.5],[1,-.5],[-.5,1]], normalised
    # a = -(1,1)/√2, b = (2,-1)/√5, c = (-1,2)/√5: Kt has 1 on the diagonal, a·b = a·c = -1/√10, b·c = -0.8.
    # Σ(K-Kt)² = 2(1/10 + (1 - 1/√10)² + 0.64) + 1 = 4.68 - 4/√10, over 9 entries.
    h = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    phi = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    s = torch.zeros(2, dtype=torch.float64)
    expected = math.sqrt((4.68 - 4 / math.sqrt(10)) / 9 + 1e-8)
    got = aft_kernel_loss(h, phi, s, form=form)
    assert abs(got.item() - expected) < 1e-6
    assert abs(naive_aft(h.numpy(), phi.numpy(), s.numpy()) - expected) < 1e-6


@pytest.mark.parametrize("form", FORMS)
def test_aft_matches_naive_loops(form):
    h, phi, s = rand(7, 3, seed=1), rand(7, 4, seed=2), rand(4, seed=3)
    got = aft_kernel_loss(h, phi, s, form=form).item()
    assert abs(got - naive_aft(h.numpy(), phi.numpy(), s.numpy())) < 1e-6


@pytest.mark.parametrize("B,d,D", [(6, 5, 7), (64, 3, 4), (40, 2, 30)])
def test_aft_forms_agree_in_value_and_gradient(B, d, D):
    h0, phi, s0 = rand(B, d, seed=B), rand(B, D, seed=d) * 3 + 1, rand(D, seed=D)
    out = {}
    for form in FORMS:
        h, s = h0.clone().requires_grad_(), s0.clone().requires_grad_()
        loss = aft_kernel_loss(h, phi, s, form=form)
        loss.backward()
        out[form] = (loss.detach(), h.grad, s.grad)
    for a, b in zip(out["gram"], out["feature"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert out["gram"][2].abs().max() > 0  # s really gets a gradient


def test_auto_form_picks_the_cheaper_one():
    assert kernel_form_for(128, 256, 384) == "gram"  # B << d + D: B×B kernels are small
    assert kernel_form_for(4096, 64, 64) == "feature"  # B >> d + D: d×D Grams are small
    h, phi, s = rand(300, 2), rand(300, 3), rand(3)
    assert aft_kernel_loss(h, phi, s).item() == pytest.approx(aft_kernel_loss_feature(h, phi, s).item(), abs=0)
    with pytest.raises(ValueError):
        aft_kernel_loss(h, phi, s, form="svd")


@pytest.mark.parametrize("form", FORMS)
def test_aft_invariant_to_rotation_and_scale_of_h(form):
    h, phi, s = rand(12, 5, seed=4), rand(12, 6, seed=5), rand(6, seed=6)
    q, _ = torch.linalg.qr(rand(5, 5, seed=7))
    base = aft_kernel_loss(h, phi, s, form=form)
    torch.testing.assert_close(aft_kernel_loss(h @ q, phi, s, form=form), base, rtol=1e-10, atol=1e-12)
    # rescaling is exact up to the +1e-8 in the row norms (the official code's eps): ~1e-9 here
    torch.testing.assert_close(aft_kernel_loss(3.7 * h, phi, s, form=form), base, rtol=1e-7, atol=0)
    torch.testing.assert_close(aft_kernel_loss(h + 5.0, phi, s, form=form), base, rtol=1e-10, atol=1e-12)
    # ... but not to an anisotropic stretch, which changes which examples look alike
    stretch = torch.tensor([10.0, 1, 1, 1, 1], dtype=torch.float64)
    assert abs(aft_kernel_loss(h * stretch, phi, s, form=form) - base) > 1e-3


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_aft_nonnegative_and_zero_when_h_is_phi(form, dtype):
    for seed in range(5):
        h, phi, s = rand(16, 4, seed=seed), rand(16, 9, seed=seed + 10), rand(9, seed=seed + 20)
        assert aft_kernel_loss(h.to(dtype), phi.to(dtype), s.to(dtype), form=form) > 0.05
    phi = rand(32, 6, seed=3).to(dtype)
    s = torch.full((6,), 40.0, dtype=dtype)  # σ(s) = 1: every feature kept
    r = aft_kernel_loss(phi.clone(), phi, s, form=form)
    assert torch.isfinite(r) and 0 <= r.item() <= 1e-4 + 1e-5  # the floor is sqrt(1e-8)


def test_aft_feature_form_survives_cancellation_in_float32():
    # Rotated copies: the kernels agree, but in float32 the identity's three large terms round to a
    # slightly negative sum (-6e-8 · B² here); without the clamp sqrt(that + 1e-8) is nan.
    for seed, (B, D) in enumerate([(512, 3), (32, 6), (256, 8)] * 3):
        g = torch.Generator().manual_seed(seed)
        phi = torch.randn(B, D, generator=g)
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
        r = aft_kernel_loss_feature(phi @ q, phi, torch.full((D,), 40.0))
        assert torch.isfinite(r) and r.item() < 5e-4


def test_aft_single_row_batch_is_finite():
    h, s = rand(1, 3).requires_grad_(), rand(4).requires_grad_()
    for form in FORMS:
        loss = aft_kernel_loss(h, rand(1, 4), s, form=form)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(h.grad).all() and torch.isfinite(s.grad).all()


def test_aft_runs_in_float32_under_bf16_autocast():
    h, phi, s = rand(48, 16).float(), rand(48, 24, seed=1).float(), rand(24, seed=2).float()
    plain = aft_kernel_loss(h, phi, s, form="gram")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = aft_kernel_loss(h, phi, s, form="gram")
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=1e-6, atol=1e-7)


def test_aft_gram_and_feature_are_the_same_function():
    h, phi, s = rand(9, 3), rand(9, 5, seed=1), rand(5, seed=2)
    torch.testing.assert_close(aft_kernel_loss_gram(h, phi, s), aft_kernel_loss_feature(h, phi, s))


def test_aft_shape_errors():
    with pytest.raises(ValueError, match="rows"):
        aft_kernel_loss(rand(4, 3), rand(5, 3), rand(3))
    with pytest.raises(ValueError, match="s must have shape"):
        aft_kernel_loss(rand(4, 3), rand(4, 3), rand(2))


# ---------------------------------------------------------------- AFT primal form


def naive_primal(h, phi, Wv, bv, s=None):
    B, d = h.shape
    t = phi if s is None else phi * (1 / (1 + np.exp(-s)))
    pred = np.array([[sum(Wv[a][k] * t[i][k] for k in range(t.shape[1])) + bv[a] for a in range(d)] for i in range(B)])
    pred = pred - pred.mean(axis=0)
    hc = h - h.mean(axis=0)
    return sum((pred[i][a] - hc[i][a]) ** 2 for i in range(B) for a in range(d)) / (B * d)


def test_aft_primal_matches_naive_loops():
    h, phi, s = rand(6, 3), rand(6, 5, seed=1), rand(5, seed=2)
    V = nn.Linear(5, 3).double()
    Wv, bv = V.weight.detach().numpy(), V.bias.detach().numpy()
    got = aft_primal_loss(h, phi, None, V).item()
    assert abs(got - naive_primal(h.numpy(), phi.numpy(), Wv, bv)) < 1e-10
    got_s = aft_primal_loss(h, phi, s, V).item()
    assert abs(got_s - naive_primal(h.numpy(), phi.numpy(), Wv, bv, s.numpy())) < 1e-10
    assert aft_primal_loss(h, phi, None, V.weight).item() == pytest.approx(got, abs=1e-12)  # bias cancels


def test_aft_primal_zero_when_h_is_linear_in_phi():
    phi, V = rand(10, 4), rand(3, 4, seed=1)
    h = phi @ V.T + 2.0
    assert aft_primal_loss(h, phi, None, V).item() < 1e-20


# ---------------------------------------------------------------- feature KD


def test_feature_kd_matches_naive_loops():
    h, phi = rand(5, 3), rand(5, 4, seed=1)
    W = nn.Linear(3, 4).double()
    Wv, bv = W.weight.detach().numpy(), W.bias.detach().numpy()
    hn, pn = h.numpy(), phi.numpy()
    ref = 0.0
    for i in range(5):
        for k in range(4):
            pred = sum(Wv[k][a] * hn[i][a] for a in range(3)) + bv[k]
            ref += (pred - pn[i][k]) ** 2
    assert abs(feature_kd_loss(h, phi, W).item() - ref / 20) < 1e-10
    Wm = rand(4, 3, seed=2)  # a plain (D, d) weight matrix works too
    assert feature_kd_loss(h, h @ Wm.T, Wm).item() < 1e-20


# ---------------------------------------------------------------- RKD


def smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def naive_rkd(h: np.ndarray, phi: np.ndarray, dw: float, aw: float) -> float:
    B = len(h)

    def dists(x):
        d = [[0.0] * B for _ in range(B)]
        for i in range(B):
            for j in range(B):
                if i != j:
                    d[i][j] = math.sqrt(sum((x[i][k] - x[j][k]) ** 2 for k in range(len(x[0]))))
        mean = sum(d[i][j] for i in range(B) for j in range(B) if i != j) / (B * (B - 1))
        return [[v / mean for v in row] for row in d]

    def cosines(x):
        out = []
        for i in range(B):
            for j in range(B):
                for k in range(B):
                    u = [x[j][c] - x[i][c] for c in range(len(x[0]))]
                    v = [x[k][c] - x[i][c] for c in range(len(x[0]))]
                    nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(a * a for a in v))
                    out.append(sum(a * b for a, b in zip(u, v)) / (max(nu, 1e-12) * max(nv, 1e-12)))
        return out

    ds, dt = dists(h), dists(phi)
    dist = sum(smooth_l1(ds[i][j] - dt[i][j]) for i in range(B) for j in range(B)) / B**2
    cs, ct = cosines(h), cosines(phi)
    angle = sum(smooth_l1(a - b) for a, b in zip(cs, ct)) / B**3
    return dw * dist + aw * angle


@pytest.mark.parametrize("dw,aw", [(1.0, 2.0), (0.5, 0.0), (0.0, 1.0)])
def test_rkd_matches_naive_loops(dw, aw):
    h = rand(6, 3)
    phi = rand(6, 5, seed=1) * torch.tensor([4.0, 0.1, 1, 1, 2], dtype=torch.float64)
    got = rkd_loss(h, phi, dw, aw).item()
    assert abs(got - naive_rkd(h.numpy(), phi.numpy(), dw, aw)) < 1e-9


def test_rkd_angle_rows_takes_the_angle_term_over_evenly_spaced_rows():
    h = rand(10, 3)
    phi = rand(10, 5, seed=1)
    rows = [0, 2, 4, 7, 9]  # linspace(0, 9, 5) rounded (half to even)
    dist_full = rkd_loss(h, phi, 1.0, 0.0).item()
    angle_sub = naive_rkd(h[rows].numpy(), phi[rows].numpy(), 0.0, 2.0)
    assert abs(rkd_loss(h, phi, 1.0, 2.0, angle_rows=5).item() - (dist_full + angle_sub)) < 1e-9
    assert rkd_loss(h, phi, 1.0, 2.0, angle_rows=10).item() == rkd_loss(h, phi, 1.0, 2.0).item()


def test_rkd_angles_from_the_gram_matrix_equal_the_difference_vector_form():
    """The B³ cosines through G = x xᵀ equal the authors' B×B×d normalised differences (float64: to 1e-12;
    float32, rows far from the origin: to 1e-5), and coinciding rows give 0 as a zero difference vector does."""
    from aftpipe.methods.losses import _triplet_cosines

    def difference_vectors(x):
        e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
        return torch.bmm(e, e.transpose(1, 2)).reshape(-1)

    x = rand(24, 40) * torch.linspace(0.1, 3, 40, dtype=torch.float64)
    torch.testing.assert_close(_triplet_cosines(x), difference_vectors(x), rtol=0, atol=1e-12)
    far = (rand(24, 40, seed=1) + 50).float()  # centring is what keeps float32 accurate here
    torch.testing.assert_close(_triplet_cosines(far), difference_vectors(far), rtol=0, atol=1e-5)
    dup = rand(8, 5, seed=2)
    dup[5] = dup[2]  # a duplicate row: every angle with a zero side is 0
    got = _triplet_cosines(dup).view(8, 8, 8)
    assert (got[2, 5] == 0).all() and (got[5, 2] == 0).all() and (got[:, 3, 3][[0, 1, 4]] - 1).abs().max() < 1e-12
    torch.testing.assert_close(got.reshape(-1), difference_vectors(dup), rtol=0, atol=1e-12)


def test_rkd_teacher_side_gets_no_gradient_and_zero_when_equal():
    h, phi = rand(8, 4).requires_grad_(), rand(8, 4, seed=1).requires_grad_()
    rkd_loss(h, phi).backward()
    assert phi.grad is None and torch.isfinite(h.grad).all() and h.grad.abs().max() > 0
    x = rand(8, 4, seed=2)
    assert rkd_loss(x, x).item() < 1e-12
    assert rkd_loss(3 * x + 1, x).item() < 1e-12  # relations are scale- and shift-free


# ---------------------------------------------------------------- logit KD


def test_logit_kd_matches_naive_loops():
    s, t, tau = rand(4, 3), rand(4, 3, seed=1) * 2, 2.5
    ref = 0.0
    for i in range(4):
        zs = [math.exp(v / tau) for v in s[i].tolist()]
        zt = [math.exp(v / tau) for v in t[i].tolist()]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        ref += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    assert abs(logit_kd_loss(s, t, tau).item() - tau**2 * ref / 4) < 1e-10


def test_logit_kd_zero_when_logits_equal_and_teacher_detached():
    s = rand(5, 4)
    assert abs(logit_kd_loss(s, s.clone(), 4.0).item()) < 1e-12
    assert abs(logit_kd_loss(s, s + 3.0, 4.0).item()) < 1e-12  # softmax ignores a shift
    student, teacher = rand(5, 4).requires_grad_(), rand(5, 4, seed=1).requires_grad_()
    loss = logit_kd_loss(student, teacher, 4.0)
    loss.backward()
    assert loss.item() > 0 and teacher.grad is None and student.grad.abs().max() > 0


# ---------------------------------------------------------------- teacher head


def blobs(n_per_class: int = 100, num_classes: int = 3, dim: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 10
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), dim, generator=g)
    return x * 50 + 7, y  # far from standardised on purpose


@pytest.mark.parametrize("hidden", [0, 16])
def test_teacher_fits_a_separable_set(hidden):
    x, y = blobs()
    head = fit_linear_head(x, y, num_classes=3, hidden=hidden, seed=0)
    assert head_accuracy(head, x, y) >= 0.99
    assert not head.training


def test_linear_head_is_seed_free_the_mlp_is_seeded_and_unlabeled_rows_are_ignored():
    x, y = blobs(seed=1)
    a = fit_linear_head(x, y, 3, seed=3)
    b = fit_linear_head(x, y, 3, seed=4)  # scikit-learn, fixed folds: one head for every seed
    torch.testing.assert_close(a.net.weight, b.net.weight, rtol=0, atol=0)
    m3, m3b = fit_linear_head(x, y, 3, hidden=8, seed=3, min_steps=5), fit_linear_head(x, y, 3, hidden=8, seed=3, min_steps=5)
    m4 = fit_linear_head(x, y, 3, hidden=8, seed=4, min_steps=5)
    torch.testing.assert_close(m3.net[0].weight, m3b.net[0].weight, rtol=0, atol=0)
    assert not torch.equal(m3.net[0].weight, m4.net[0].weight)
    # unlabeled rows with wild features change nothing: only labeled rows are fitted
    x2 = torch.cat([x, torch.full((10, x.shape[1]), 1e6)])
    y2 = torch.cat([y, torch.full((10,), -1)])
    d = fit_linear_head(x2, y2, 3, seed=3)
    torch.testing.assert_close(a.net.weight, d.net.weight, rtol=0, atol=0)
    with pytest.raises(AftpipeError, match="labeled"):
        fit_linear_head(x, torch.full_like(y, -1), 3)
    with pytest.raises(AftpipeError, match="two classes"):
        fit_linear_head(x, torch.zeros_like(y), 3)
    with pytest.raises(TypeError, match="hidden > 0"):
        fit_linear_head(x, y, 3, min_steps=5)  # a torch option on the scikit-learn head is a mistake, not a no-op


def test_linear_head_is_scikit_learns_logistic_regression():
    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm], y[perm]
    tr, te = slice(0, 1200), slice(1200, None)
    scaler = StandardScaler().fit(X[tr])
    ref = LogisticRegression(max_iter=3000).fit(scaler.transform(X[tr]), y[tr])
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    head = fit_linear_head(Xt[tr], yt[tr], 10, c=1.0)
    assert head.cv == {} and head.c == 1.0  # an explicit C skips cross-validation
    ours = head(Xt[te]).argmax(-1).numpy()  # raw features in: the head standardises them itself
    assert (ours == ref.predict(scaler.transform(X[te]))).mean() >= 0.995
    # the torch head reaches the same model's accuracy (it is the MLP's trainer, and the benchmark's reference)
    torch_head = fit_torch_head(Xt[tr], yt[tr], 10, c=1.0)
    assert head_accuracy(torch_head, Xt[te], yt[te]) >= ref.score(scaler.transform(X[te]), y[te]) - 0.01


def test_binary_head_reproduces_the_logistic_probabilities_and_skips_absent_classes():
    x, y = blobs(num_classes=2, seed=2)
    y = y.clone()
    y[::7] = 1 - y[::7]  # some noise, so the probabilities are not all 0 or 1
    head = fit_linear_head(x, y, 3, c=0.1)  # class 2 has no training row
    xs = ((x - x.mean(0)) / x.std(0, unbiased=False)).double().numpy()
    ref = LogisticRegression(C=0.1, max_iter=1000).fit(xs, y.numpy())
    with torch.no_grad():
        probs = torch.softmax(head(x).double(), -1)
    np.testing.assert_allclose(probs[:, :2].numpy(), ref.predict_proba(xs), atol=1e-5)
    assert float(probs[:, 2].max()) < 1e-30 and not bool((head(x).argmax(-1) == 2).any())


def test_cross_validation_lands_near_the_best_c_in_hindsight():
    # 2 informative features among 300, 150 rows: test accuracy swings by >10 points across the grid, and
    # the C chosen on the training rows alone must score within 1.5 points of the best one on fresh rows
    g = torch.Generator().manual_seed(0)

    def sample(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 300, generator=g)
        x[:, :2] += (2 * y[:, None] - 1) * 0.8
        return x, y

    x, y = sample(150)
    xt, yt = sample(2000)
    chosen = fit_linear_head(x, y, 2)
    assert set(chosen.cv) == set(C_GRID) and chosen.c == max(C_GRID, key=lambda c: (chosen.cv[c], -c))
    hindsight = [head_accuracy(fit_linear_head(x, y, 2, c=c), xt, yt) for c in C_GRID]
    assert max(hindsight) - min(hindsight) > 0.10
    assert head_accuracy(chosen, xt, yt) >= max(hindsight) - 0.015


def test_aft_floor_is_the_kernel_distance_of_a_student_that_knows_nothing():
    from aftpipe.methods.losses import aft_kernel_floor

    g = torch.Generator().manual_seed(3)
    phi, s = torch.randn(16, 10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    t = phi * torch.sigmoid(s)
    t = t - t.mean(0)
    t = t / (t.norm(dim=1, keepdim=True) + 1e-8)
    naive = torch.sqrt(((torch.eye(16, dtype=torch.float64) - t @ t.T) ** 2).mean() + 1e-8)
    torch.testing.assert_close(aft_kernel_floor(phi, s), naive)
    # a student whose features are φ ⊙ σ(s) itself scores 0; one that knows nothing sits at the floor
    assert aft_kernel_loss(phi * torch.sigmoid(s), phi, s) < 1e-3 < aft_kernel_floor(phi, s)
