"""Chapter 14: kto_loss and kto_kl against TRL 1.16's KTOTrainer, sympy, autograd and the errors."""

from __future__ import annotations

import inspect
import math

import pytest
import sympy as sp
import torch

import lossbook
from lossbook import kto_loss
from lossbook.derivations import reference_free as rf
from lossbook.kto import LOSS_FUNCTIONS, LOSS_TYPES, kto_kl, recommended_weight_range


def _logps(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return -10 + 3 * torch.randn(n, generator=g, dtype=dtype)


# ---------------------------------------------------------------- the real KTOTrainer


@pytest.fixture(scope="module")
def conformance(trl):
    from lossbook.demos.reference_free import kto_conformance

    return {row["loss_type"]: row for row in kto_conformance()}


def test_trl_has_exactly_these_loss_types(trl):
    from trl import KTOTrainer

    src = inspect.getsource(KTOTrainer._compute_loss)
    found = []
    for line in src.splitlines():
        if "self.loss_type == " in line:
            name = line.split('"')[1]
            if name not in found:
                found.append(name)
    assert tuple(found) == LOSS_TYPES


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_kto_loss_equals_trl_ktotrainer(conformance, loss_type):
    row = conformance[loss_type]
    tol = 1e-5 * max(1.0, abs(row["trl"]))
    assert row["diff"] <= tol and row["grad_diff"] <= tol, row
    assert abs(row["trl_kl"] - row["lossbook_kl"]) <= 1e-5
    assert row["counts"] == (3, 4)  # unpaired, imbalanced


def test_the_conformance_batch_tells_kto_from_apo(conformance):
    """A batch whose KL estimate is 0 would make kto and apo_zero_unpaired equal: this one is positive."""
    assert conformance["kto"]["trl_kl"] > 0.1
    assert abs(conformance["kto"]["trl"] - conformance["apo_zero_unpaired"]["trl"]) > 1e-3


def test_trl_recommended_weight_range_is_recommended_weight_range(trl):
    from trl import KTOTrainer

    src = inspect.getsource(KTOTrainer._prepare_dataset)
    assert "(num_undesirable * self.undesirable_weight / num_desirable) * 1.33, 2" in src
    assert recommended_weight_range(100, 500) == (5.0, 6.65)
    assert recommended_weight_range(100, 500, undesirable_weight=0.5) == (2.5, 3.33)


# ---------------------------------------------------------------- sympy, autograd, hand-made


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("counts", [(1, 0), (0, 1), (3, 5), (4, 1)])
def test_kto_loss_equals_sympy(loss_type, counts):
    nd, nu = counts
    pc, pr, rc, rr = _logps(nd, 1), _logps(nu, 2), _logps(nd, 3), _logps(nu, 4)
    kl = torch.tensor(0.6, dtype=torch.float64)
    losses, rw, rl = kto_loss(pc, pr, rc, rr, kl, beta=0.7, desirable_weight=1.5, undesirable_weight=0.25,
                              loss_type=loss_type)
    r = sp.Symbol("r", real=True)
    z0 = 0 if loss_type == "apo_zero_unpaired" else sp.Rational(3, 5)
    want = [rf.kto_losses(r, z0, sp.Rational(7, 10), sp.Rational(3, 2), True).subs(r, float(a - b))
            for a, b in zip(pc, rc)]
    if loss_type == "kto":
        want += [rf.kto_losses(r, z0, sp.Rational(7, 10), sp.Rational(1, 4), False).subs(r, float(a - b))
                 for a, b in zip(pr, rr)]
    else:
        want += [sp.Rational(1, 4) * rf.sigmoid(sp.Rational(7, 10) * r).subs(r, float(a - b)) for a, b in zip(pr, rr)]
    assert losses.shape == (nd + nu,)
    assert torch.allclose(losses, torch.tensor([float(w) for w in want], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rw, 0.7 * (pc - rc)) and torch.allclose(rl, 0.7 * (pr - rr))
    assert not rw.requires_grad


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_kto_loss_gradcheck(loss_type):
    x = [_logps(3, 5).requires_grad_(), _logps(2, 6).requires_grad_()]
    refs = [_logps(3, 7), _logps(2, 8)]
    kl = torch.tensor(0.3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: kto_loss(a, b, *refs, kl, beta=0.5, desirable_weight=2.0,
                                                          loss_type=loss_type)[0], tuple(x))


def test_kto_kl_is_the_clamped_detached_mean_log_ratio():
    p = _logps(5, 1).requires_grad_()
    r = _logps(5, 2)
    kl = kto_kl(p, r)
    assert not kl.requires_grad and kl.dim() == 0
    assert math.isclose(float(kl), max(0.0, float((p - r).mean())), abs_tol=1e-12)
    assert float(kto_kl(r - 1, r)) == 0.0  # a negative estimate is clamped
    assert math.isclose(float(kto_kl(r + 2, r)), 2.0, abs_tol=1e-12)


def test_the_kl_shifts_only_kto():
    pc, pr, rc, rr = _logps(2, 1), _logps(3, 2), _logps(2, 3), _logps(3, 4)
    for kl in (0.0, 1.0):
        apo = kto_loss(pc, pr, rc, rr, torch.tensor(kl, dtype=torch.float64), loss_type="apo_zero_unpaired")[0]
        assert torch.allclose(apo, kto_loss(pc, pr, rc, rr, torch.tensor(0.0, dtype=torch.float64),
                                            loss_type="apo_zero_unpaired")[0])
    a = kto_loss(pc, pr, rc, rr, torch.tensor(0.0, dtype=torch.float64))[0]
    b = kto_loss(pc, pr, rc, rr, torch.tensor(1.0, dtype=torch.float64))[0]
    assert (a[:2] < b[:2]).all() and (a[2:] > b[2:]).all()  # a higher bar: desirable lose, undesirable gain


def test_weights_scale_each_side_and_float32_works():
    pc, pr, rc, rr = (t.float() for t in (_logps(2, 1), _logps(3, 2), _logps(2, 3), _logps(3, 4)))
    kl = torch.tensor(0.2)
    base = kto_loss(pc, pr, rc, rr, kl)[0]
    w = kto_loss(pc, pr, rc, rr, kl, desirable_weight=3.0, undesirable_weight=0.5)[0]
    assert torch.allclose(w[:2], 3 * base[:2]) and torch.allclose(w[2:], 0.5 * base[2:])
    assert w.dtype == torch.float32
    kl1 = torch.zeros(1)  # TRL's apo_zero_unpaired passes torch.zeros(1)
    assert kto_loss(pc, pr, rc, rr, kl1, loss_type="apo_zero_unpaired")[0].shape == (5,)


def test_uniform_shift_slope_sign_is_the_weight_rule():
    n_d, n_u, beta, w_d, w_u = sp.symbols("n_D n_U beta w_D w_U", positive=True)
    slope = rf.uniform_shift_slope(n_d, n_u, beta, w_d, w_u)
    low, high = recommended_weight_range(100, 500)
    for w, sign in ((1.0, 1), (low, 0), (high, -1)):
        value = slope.subs({n_d: 100, n_u: 500, beta: 1, w_d: sp.nsimplify(w), w_u: 1})
        assert (value > 0) if sign > 0 else (value == 0 if sign == 0 else value < 0)


# ---------------------------------------------------------------- errors


def test_kto_loss_errors():
    pc, pr, rc, rr = _logps(2, 1), _logps(3, 2), _logps(2, 3), _logps(3, 4)
    kl = torch.tensor(0.1, dtype=torch.float64)
    with pytest.raises(ValueError, match="policy_chosen_logps has shape \\[2\\] but ref_chosen_logps has shape"):
        kto_loss(pc, pr, rc[:1], rr, kl)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        kto_loss(pc, pr, rc, rr, kl, loss_type="bco")
    with pytest.raises(ValueError, match="kl requires grad"):
        kto_loss(pc, pr, rc, rr, kl.clone().requires_grad_())
    with pytest.raises(ValueError, match="kl must be >= 0"):
        kto_loss(pc, pr, rc, rr, -kl)
    with pytest.raises(ValueError, match="0-dim tensor"):
        kto_loss(pc, pr, rc, rr, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="no examples"):
        kto_loss(pc[:0], pr[:0], rc[:0], rr[:0], kl)
    with pytest.raises(ValueError, match="desirable_weight must be a finite number >= 0"):
        kto_loss(pc, pr, rc, rr, kl, desirable_weight=-1.0)
    with pytest.raises(TypeError, match="undesirable_weight must be a real number"):
        kto_loss(pc, pr, rc, rr, kl, undesirable_weight=torch.tensor(1.0))
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        kto_loss(pc, pr, rc, rr, kl, beta=0.0)
    with pytest.raises(ValueError, match="ref_rejected_logps was computed with autograd on"):
        kto_loss(pc, pr, rc, rr * torch.ones(1, requires_grad=True), kl)
    with pytest.raises(ValueError, match="\\[batch\\]"):
        kto_loss(pc[None], pr, rc[None], rr, kl)
    nan = pr.clone()
    nan[1] = float("nan")
    with pytest.raises(ValueError, match=r"policy_rejected_logps \(shape \[3\]\) holds NaN at 1 of 3"):
        kto_loss(pc, nan, rc, rr, kl)
    with pytest.raises(ValueError, match="ref_rejected_logps .* holds NaN"):
        kto_loss(pc, pr, rc, nan, kl)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="kl must be finite"):
            kto_loss(pc, pr, rc, rr, torch.tensor(bad, dtype=torch.float64))


def test_kto_kl_errors():
    a, b = _logps(4, 1), _logps(4, 2)
    with pytest.raises(ValueError, match=r"policy_kl_logps has shape \[4\] but ref_kl_logps has shape \[3\]"):
        kto_kl(a, b[:3])
    with pytest.raises(ValueError, match="no mismatched pair"):
        kto_kl(a[:0], b[:0])
    with pytest.raises(ValueError, match="ref_kl_logps .* holds NaN"):
        kto_kl(a, b.where(torch.arange(4) != 2, torch.nan))
    with pytest.raises(TypeError, match="policy_kl_logps"):
        kto_kl(a.long(), b)


def test_registry_and_export():
    assert tuple(LOSS_FUNCTIONS) == LOSS_TYPES
    assert lossbook.kto_loss is kto_loss
    for fn in LOSS_FUNCTIONS.values():
        doc = fn.__doc__
        assert "TRL 1.16" in doc and "20" in doc  # a paper's year and TRL's branch


def test_bug_zoo_kto_exhibits_fail_the_check():
    from lossbook.bugzoo import reference_free as zoo
    from lossbook.checks import compare_losses
    from lossbook.demos import reference_free as demo

    cases = demo.zoo_cases("kto")
    assert compare_losses(demo.kto_from_logps, demo.kto_from_logps, cases).passed
    for bug in (zoo.kto_kl_not_detached, zoo.kto_kl_not_clamped, zoo.kto_labels_swapped):
        assert not compare_losses(bug, demo.kto_from_logps, cases, atol=1e-5).passed, bug.__name__
    # the not-detached exhibit has the right value: only its gradient gives it away
    result = compare_losses(zoo.kto_kl_not_detached, demo.kto_from_logps, cases, atol=1e-5)
    assert result.value_error <= 1e-6 and result.other_grad_error > 1e-3


def test_widget_numbers_are_kto_loss():
    from lossbook.widgets.kto import KTOValueExplorer

    w = KTOValueExplorer(beta=0.5, z0=1.0, desirable_weight=2.0, undesirable_weight=1.0, r=2.0)
    (ld, gd), (lu, gu) = w.at["desirable"], w.at["undesirable"]
    s = 1 / (1 + math.exp(-0.5 * (2.0 - 1.0)))
    assert math.isclose(ld, 2 * (1 - s), rel_tol=1e-9) and math.isclose(lu, s, rel_tol=1e-9)
    assert math.isclose(gd, -2 * 0.5 * s * (1 - s), rel_tol=1e-9) and math.isclose(gu, 0.5 * s * (1 - s), rel_tol=1e-9)
    w.z0.value = 3.0
    assert w.at["desirable"][0] > ld


def test_exercise_3_reference_is_the_weight_where_the_slope_vanishes():
    """``demo.balancing_weight`` (autograd) against sympy: the undesirable examples at z0 - d, the desirable ones
    at z0, every log-ratio moved by c; the w_D that zeroes d(mean loss)/dc at c = 0.  At d = 0 it is section
    1's lower end, w_U n_U / n_D."""
    from lossbook.demos import reference_free as demo

    n_d, n_u, w_u, beta, d, w_d, z0, c = sp.symbols("n_D n_U w_U beta d w_D z_0 c", positive=True)
    mean = (n_d * rf.kto_losses(z0 + c, z0, beta, w_d, True)
            + n_u * rf.kto_losses(z0 - d + c, z0, beta, w_u, False)) / (n_d + n_u)
    (w_star,) = sp.solve(sp.diff(mean, c).subs(c, 0), w_d)
    assert sp.simplify(w_star.subs(d, 0) - w_u * n_u / n_d) == 0
    for point in ((3, 7, 0.5, 0.1, 2.0), (10, 2, 1.5, 2.0, 0.3), (1, 1, 1.0, 0.7, 0.0)):
        got = float(demo.balancing_weight(torch.tensor(point, dtype=torch.float64)))
        want = float(w_star.subs(dict(zip((n_d, n_u, w_u, beta, d), point))))
        assert math.isclose(got, want, rel_tol=1e-12), (point, got, want)
