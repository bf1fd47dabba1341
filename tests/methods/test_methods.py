"""The method contract, across the whole registry, plus what each method adds to it."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from aftpipe.config import ConfigError
from aftpipe.errors import AftpipeError
from aftpipe.methods import (METHODS, LossTerms, Method, MethodConfig, build_method, check_options,
                             masked_cross_entropy)
from aftpipe.methods.losses import aft_kernel_loss, logit_kd_loss

D_STUDENT, FEATURE_DIMS, NUM_CLASSES, B = 8, (5, 7), 3, 24


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (and stall on shared cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def batch(seed: int = 0, unlabeled: int = 6):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(B, sum(FEATURE_DIMS), generator=g)
    y = torch.randint(0, NUM_CLASSES, (B,), generator=g)
    y[:unlabeled] = -1
    return phi, y


def make(name: str, seed: int = 0, **cfg) -> tuple[Method, nn.Module]:
    """The method and a stand-in student head, teacher fitted where needed."""
    cfg.setdefault("beta", 0.5)
    method = build_method(name, MethodConfig(**cfg), D_STUDENT, FEATURE_DIMS, NUM_CLASSES)
    if method.needs_teacher:
        phi, y = batch(seed=100, unlabeled=0)
        method.fit_teacher(phi, y, seed=seed)
    torch.manual_seed(seed)
    return method, nn.Linear(D_STUDENT, NUM_CLASSES)


LOSSES = [n for n in METHODS.names() if METHODS.get(n).uses_student]  # linear_probe has a recipe of its own


def student_features(method: Method, phi: torch.Tensor) -> torch.Tensor:
    return torch.randn(B, D_STUDENT, generator=torch.Generator().manual_seed(7)).requires_grad_()


def test_registry_holds_every_method():
    expected = {"none", "linear_probe", "aft", "aft_primal", "kd_feature", "rkd", "kd_logit", "tokt"}
    assert set(METHODS.names()) == expected
    classes = {n: METHODS.get(n) for n in METHODS.names()}
    flags = {n: (c.uses_student, c.needs_teacher, c.uses_unlabeled) for n, c in classes.items()}
    assert flags["linear_probe"][0] is False and all(f[0] for n, f in flags.items() if n != "linear_probe")
    assert {n for n, f in flags.items() if f[1]} == {"kd_logit", "tokt"}
    assert {n for n, f in flags.items() if f[2]} == {"aft", "aft_primal", "kd_feature", "rkd", "kd_logit", "tokt"}
    assert all(help for _, help in METHODS.describe())
    with pytest.raises(AftpipeError, match="linear_probe is not trained as a student"):
        build_method("linear_probe", MethodConfig(), D_STUDENT, FEATURE_DIMS, NUM_CLASSES)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("progress", [0.1, 0.9])
def test_every_method_runs_forward_and_backward(name, progress):
    method, head = make(name)
    phi, y = batch()
    h = student_features(method, phi)
    terms = method(h, head(h), phi, y, progress)
    assert isinstance(terms, LossTerms)
    for t in (terms.total, terms.ce, terms.reg):
        assert t.ndim == 0 and torch.isfinite(t)
    terms.total.backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().max() > 0
    for p in method.parameters():
        if p.requires_grad and method.cfg.beta > 0:
            assert p.grad is not None and torch.isfinite(p.grad).all()
    json.dumps(method.summary())
    # CE is over the labeled rows only
    torch.testing.assert_close(terms.ce, F.cross_entropy(head(h)[y >= 0], y[y >= 0]))


@pytest.mark.parametrize("name", LOSSES)
def test_every_method_handles_a_batch_without_labels(name):
    method, head = make(name)
    phi, y = batch(unlabeled=B)
    h = student_features(method, phi)
    terms = method(h, head(h), phi, y, 0.2)
    assert terms.ce.item() == 0.0 and torch.isfinite(terms.total)
    terms.total.backward()  # must not fail even when nothing in the batch is labeled
    assert torch.isfinite(h.grad).all()


def test_masked_cross_entropy():
    logits = torch.randn(5, 3)
    y = torch.tensor([2, -1, 0, -1, 1])
    torch.testing.assert_close(masked_cross_entropy(logits, y), F.cross_entropy(logits[y >= 0], y[y >= 0]))
    assert masked_cross_entropy(logits, torch.full((5,), -1)).item() == 0.0


def test_method_config_checks_itself_and_build_method_refuses_bad_input():
    with pytest.raises(ConfigError) as e:
        MethodConfig(beta=-1)
    assert str(e.value) == "beta: must be ≥ 0, got -1" and e.value.path == ("beta",)
    with pytest.raises(ConfigError, match="^tau: must be > 0"):
        MethodConfig(tau=0)
    with pytest.raises(ConfigError, match="^distill_fraction: must be in"):
        MethodConfig(distill_fraction=1.5)
    with pytest.raises(ConfigError, match="^beta: expected a number, got '1e-3'"):
        MethodConfig(beta="1e-3")
    with pytest.raises(AftpipeError, match="no method `aftt`; known: aft, aft_primal"):
        build_method("aftt", MethodConfig(), D_STUDENT, FEATURE_DIMS, NUM_CLASSES)
    with pytest.raises(AftpipeError, match="pass features=STORE"):
        build_method("aft", MethodConfig(), D_STUDENT, [], NUM_CLASSES)
    assert build_method("none", MethodConfig(), D_STUDENT, [], NUM_CLASSES).feature_dim == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        MethodConfig().beta = 2.0  # type: ignore[misc]


OTHER_OPTIONS = {"beta": 0.9, "state_lr": 0.5, "tau": 2.0, "teacher_hidden": 16, "distill_fraction": 0.2,
                 "rkd_distance_weight": 3.0, "rkd_angle_weight": 0.5, "rkd_angle_rows": 5}


@pytest.mark.parametrize("name", sorted(n for n in METHODS.names() if METHODS.get(n).uses_student))
def test_a_method_reads_only_the_options_it_declares(name):
    """Options a method does not declare leave its losses, state and teacher unchanged, so refusing them (they
    would be silently ignored) loses nothing; those it declares are refused for every other method."""
    own = METHODS.get(name).Options.field_names()
    assert set(OTHER_OPTIONS) == {f.name for f in dataclasses.fields(MethodConfig)} >= set(own)
    others = {k: v for k, v in OTHER_OPTIONS.items() if k not in own}
    phi, y = batch()

    def losses(**cfg):
        method, head = make(name, **cfg)
        h = student_features(method, phi)
        return [method(h, head(h), phi, y, p).total.item() for p in (0.0, 0.3, 0.9)], method.summary()

    assert losses(**{"beta": MethodConfig().beta, **others}) == losses(beta=MethodConfig().beta)
    learns = any(p.requires_grad for p in make(name)[0].parameters())  # what state_lr is the learning rate of
    assert learns == ("state_lr" in own)
    check_options(name, own)
    method = make(name, **OTHER_OPTIONS)[0]  # handed the flat config, it keeps its own options alone
    assert type(method.cfg) is METHODS.get(name).Options and method.cfg.to_dict() == {k: OTHER_OPTIONS[k] for k in own}
    for key in others:
        with pytest.raises(ConfigError, match=f"^{key}: does not apply to method `{name}`; drop it"):
            check_options(name, [key])


def test_every_option_of_the_flat_config_is_some_methods_own():
    """MethodConfig is the union of the methods' own options (the CLI's and YAML's view): none is left over
    for no method to read, and a method's `regularised` is whether it declares β."""
    owned = {key for n in METHODS.names() for key in METHODS.get(n).Options.field_names()}
    assert owned == set(MethodConfig.field_names())
    for n in METHODS.names():
        assert METHODS.get(n).regularised() == ("beta" in METHODS.get(n).Options.field_names())


def test_the_linear_probe_refuses_every_method_option():
    """The probe fits its own head (aftpipe.probe): no β, τ or state to set, so each one is refused by name."""
    assert METHODS.get("linear_probe").Options.field_names() == ()
    for key in OTHER_OPTIONS:
        with pytest.raises(ConfigError, match=f"^{key}: does not apply to method `linear_probe`; drop it"):
            check_options("linear_probe", [key])


def test_aft_s_gets_gradient_only_from_the_regulariser():
    beta = 0.3
    method, head = make("aft", beta=beta)
    with torch.no_grad():
        method.s.copy_(torch.linspace(-2, 2, sum(FEATURE_DIMS)))
    phi, y = batch()
    h = student_features(method, phi)
    terms = method(h, head(h), phi, y)
    (g_ce,) = torch.autograd.grad(terms.ce, method.s, retain_graph=True, allow_unused=True)
    assert g_ce is None or g_ce.abs().max() == 0
    (g_reg,) = torch.autograd.grad(terms.reg, method.s, retain_graph=True)
    terms.total.backward()
    torch.testing.assert_close(method.s.grad, beta * g_reg)
    assert g_reg.abs().max() > 0
    torch.testing.assert_close(terms.reg, aft_kernel_loss(h, phi, method.s))
    torch.testing.assert_close(terms.total, terms.ce + beta * terms.reg)


def test_aft_state_and_summary_per_source():
    method, _ = make("aft")
    assert [n for n, _ in method.named_parameters()] == ["s"] and "s" in method.state_dict()
    summary = method.summary()
    assert len(summary["sources"]) == len(FEATURE_DIMS)
    assert [s["dim"] for s in summary["sources"]] == list(FEATURE_DIMS)
    assert all(s["sigma_mean"] == 0.5 and s["frac_above_half"] == 0.0 for s in summary["sources"])
    with torch.no_grad():
        method.s[FEATURE_DIMS[0] :] = 3.0  # the second source switched on
    second = method.summary()["sources"][1]
    assert second["frac_above_half"] == 1.0 and second["sigma_mean"] == pytest.approx(1 / (1 + math.exp(-3)))


def test_aft_learns_to_keep_the_source_that_explains_h():
    """h is built from source 0 alone; minimising R over s alone must weight source 0 above source 1."""
    g = torch.Generator().manual_seed(0)
    method = build_method("aft", MethodConfig(), 6, (6, 6), NUM_CLASSES)
    opt = torch.optim.Adam(method.parameters(), lr=0.1)
    for _ in range(150):
        phi = torch.randn(64, 12, generator=g)
        h = phi[:, :6] @ torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
        loss = aft_kernel_loss(h, phi, method.s)
        opt.zero_grad()
        loss.backward()
        opt.step()
    kept, noise = (s["sigma_mean"] for s in method.summary()["sources"])
    assert kept > 0.6 and noise < 0.4


def test_learned_state_of_primal_and_feature_kd():
    primal, _ = make("aft_primal")
    assert primal.V.weight.shape == (D_STUDENT, sum(FEATURE_DIMS))
    assert len(primal.summary()["sources"]) == len(FEATURE_DIMS)
    assert sum(s["weight_share"] for s in primal.summary()["sources"]) == pytest.approx(1.0)
    kd, _ = make("kd_feature")
    assert kd.W.weight.shape == (sum(FEATURE_DIMS), D_STUDENT)
    assert list(make("rkd")[0].parameters()) == []


@pytest.mark.parametrize("name", ["kd_logit", "tokt"])
def test_teacher_is_required_and_frozen(name):
    method = build_method(name, MethodConfig(), D_STUDENT, FEATURE_DIMS, NUM_CLASSES)
    phi, y = batch()
    h = student_features(method, phi)
    with pytest.raises(RuntimeError, match="fit_teacher"):
        method(h, nn.Linear(D_STUDENT, NUM_CLASSES)(h), phi, y, 0.0)
    method, head = make(name)
    assert method.teacher is not None
    assert [p for p in method.parameters() if p.requires_grad] == []  # nothing for the optimizer to move
    method(h, head(h), phi, y, 0.0).total.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    fit_phi, fit_y = batch(seed=100, unlabeled=0)  # the rows make() fitted the teacher on
    with torch.no_grad():
        expect = (method.teacher(fit_phi).argmax(-1) == fit_y).float().mean().item()
    assert method.summary()["teacher_train_acc"] == pytest.approx(expect)
    assert "teacher.net.weight" in method.state_dict()


def test_kd_logit_distills_on_every_row():
    method, head = make("kd_logit", beta=0.7, tau=2.0)
    phi, y = batch()
    h = student_features(method, phi)
    logits = head(h)
    terms = method(h, logits, phi, y)
    expected = logit_kd_loss(logits, method.teacher(phi), 2.0)  # all B rows, labeled or not
    torch.testing.assert_close(terms.reg, expected)
    torch.testing.assert_close(terms.total, terms.ce + 0.7 * expected)


def test_tokt_switches_from_distillation_to_ce_at_distill_fraction():
    method, head = make("tokt", beta=0.8, distill_fraction=0.4, tau=3.0)
    phi, y = batch()
    h = student_features(method, phi)
    logits = head(h)
    kd = logit_kd_loss(logits, method.teacher(phi), 3.0)
    ce = F.cross_entropy(logits[y >= 0], y[y >= 0])

    early = method(h, logits, phi, y, progress=0.399)
    torch.testing.assert_close(early.total, 0.8 * kd)
    torch.testing.assert_close(early.ce, ce)  # reported, not trained on
    assert not early.ce.requires_grad
    relabeled = method(h, logits, phi, torch.full_like(y, -1), progress=0.0)
    torch.testing.assert_close(relabeled.total, early.total)  # labels play no part while distilling

    late = method(h, logits, phi, y, progress=0.4)
    torch.testing.assert_close(late.total, ce)
    assert late.reg.item() == 0.0
    assert method.summary()["distill_fraction"] == 0.4


def test_beta_zero_leaves_only_cross_entropy():
    for name in ("aft", "aft_primal", "kd_feature", "rkd", "kd_logit"):
        method, head = make(name, beta=0.0)
        phi, y = batch()
        h = student_features(method, phi)
        terms = method(h, head(h), phi, y)
        torch.testing.assert_close(terms.total, terms.ce)
        assert terms.reg.item() > 0  # still computed, for the log
