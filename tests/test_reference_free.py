"""Chapter 14: cpo_loss (sigmoid, hinge, ipo, simpo, AlphaPO), orpo_loss and log1mexp against TRL 1.16's
trl.experimental CPOTrainer and ORPOTrainer, sympy, autograd, and the errors."""

from __future__ import annotations

import inspect
import math

import pytest
import sympy as sp
import torch

import lossbook
from lossbook import cpo_loss, orpo_loss
from lossbook.derivations import reference_free as rf
from lossbook.reference_free import AVERAGED, LOSS_FUNCTIONS, LOSS_TYPES, log1mexp


def _avg(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return -2 * torch.rand(n, generator=g, dtype=dtype) - 0.05


# ---------------------------------------------------------------- the real trainers


@pytest.fixture(scope="module")
def cpo_rows(trl):
    from lossbook.demos.reference_free import cpo_conformance

    return cpo_conformance()


@pytest.fixture(scope="module")
def orpo_row(trl):
    from lossbook.demos.reference_free import orpo_conformance

    return orpo_conformance()[0]


def test_trl_cpo_has_exactly_these_loss_types_and_averages(trl):
    from trl.experimental.cpo import CPOTrainer

    src = inspect.getsource(CPOTrainer.cpo_loss)
    found = [line.split('"')[1] for line in src.splitlines() if "self.loss_type == " in line]
    assert tuple(found) == LOSS_TYPES
    forward = inspect.getsource(CPOTrainer.concatenated_forward)
    assert 'average_log_prob=self.loss_type in ["ipo", "simpo"]' in forward
    assert AVERAGED == ("ipo", "simpo")


def test_every_cpo_setting_equals_trl(cpo_rows):
    covered = {row["loss_type"] for row in cpo_rows}
    assert covered == set(LOSS_TYPES)
    assert any(row["settings"].get("alpha", 0) > 0 for row in cpo_rows)
    assert any(row["settings"].get("alpha", 0) < 0 for row in cpo_rows)
    for row in cpo_rows:
        tol = 1e-5 * max(1.0, abs(row["trl"]))
        assert row["diff"] <= tol and row["grad_diff"] <= tol, row
        assert row["method_diff"] <= 1e-10, row  # TRL's cpo_loss on the same float64 log-probs
        assert math.isfinite(row["trl"]) and row["trl"] != 0


def test_cpo_settings_are_told_apart(cpo_rows):
    """The conformance can fail: the settings give different losses (no two rows agree)."""
    values = sorted(row["trl"] for row in cpo_rows)
    assert min(b - a for a, b in zip(values, values[1:])) > 1e-3


def test_orpo_equals_trl(orpo_row):
    tol = 1e-5 * max(1.0, abs(orpo_row["trl"]))
    assert orpo_row["diff"] <= tol and orpo_row["grad_diff"] <= tol, orpo_row
    assert orpo_row["method_diff"] <= 1e-6  # TRL's odds_ratio_loss upcasts to float32


def test_log1mexp_is_trls(trl):
    from trl.experimental.orpo.orpo_trainer import log1mexp as trl_log1mexp

    x = torch.cat([-torch.logspace(-9, 2, 200, dtype=torch.float64),
                   torch.tensor([-math.log(2)], dtype=torch.float64)])
    assert torch.equal(log1mexp(x), trl_log1mexp(x))
    assert torch.equal(log1mexp(x.float()), trl_log1mexp(x.float()))


def test_orpo_sign_convention_against_trls_method(trl):
    """TRL returns beta * logsigmoid(log_odds) and subtracts its mean; lossbook returns the penalty."""
    from lossbook.demos.reference_free import _offline

    _offline()
    from trl.experimental.orpo import ORPOTrainer

    class Fake:
        beta = 0.3

        class accelerator:  # noqa: N801
            device = "cpu"

    a, b = _avg(5, 1), _avg(5, 2)
    theirs = ORPOTrainer.odds_ratio_loss(Fake(), a, b)
    ours = orpo_loss(a, b, beta=0.3)
    assert torch.allclose(-theirs[0], ours[0].float(), atol=1e-6)
    assert torch.allclose(theirs[1], ours[1].float()) and torch.allclose(theirs[2], ours[2].float())


# ---------------------------------------------------------------- sympy and autograd


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0), ("sigmoid", 0.2), ("hinge", 0), ("ipo", 0), ("simpo", 0),
                                           ("simpo", 0.1)])
@pytest.mark.parametrize("alpha", [0.0, 0.5, -0.25])
def test_cpo_loss_equals_sympy(loss_type, eps, alpha):
    uw, ul = sp.symbols("u_w u_l", negative=True)
    beta, gamma = sp.Rational(7, 5), sp.Rational(3, 4)
    if alpha:
        a = sp.nsimplify(alpha)
        rw, rl = rf.alphapo_reward(uw, a), rf.alphapo_reward(ul, a)
    else:
        rw, rl = uw, ul
    expr = rf.cpo_variant(loss_type, rw, rl, beta, eps=sp.nsimplify(eps), gamma=gamma).subs({})
    f = sp.lambdify((uw, ul), expr)
    dfw, dfl = (sp.lambdify((uw, ul), sp.diff(expr, s)) for s in (uw, ul))
    x = [_avg(6, 3).requires_grad_(), _avg(6, 4).requires_grad_()]
    kw = {"simpo_gamma": 0.75} if loss_type == "simpo" else {}
    losses = cpo_loss(*x, beta=1.4, loss_type=loss_type, label_smoothing=eps, alpha=alpha, **kw)[0]
    gw, gl = torch.autograd.grad(losses.sum(), x)
    for i in range(6):
        p = (float(x[0][i]), float(x[1][i]))
        assert abs(f(*p) - float(losses[i])) <= 1e-10
        if loss_type != "hinge" or abs(1 - 1.4 * (float(rw.subs({uw: p[0]})) - float(rl.subs({ul: p[1]})))) > 1e-6:
            assert abs(float(dfw(*p)) - float(gw[i])) <= 1e-10 and abs(float(dfl(*p)) - float(gl[i])) <= 1e-10


def test_orpo_loss_equals_sympy_and_the_papers_gradient():
    uw, ul = sp.symbols("u_w u_l", negative=True)
    beta = sp.Rational(1, 3)
    expr = rf.orpo_penalty(uw, ul, beta)
    gw_expr, gl_expr = rf.orpo_grad(uw, ul, beta)
    assert sp.simplify(sp.diff(expr, uw) - gw_expr) == 0 and sp.simplify(sp.diff(expr, ul) - gl_expr) == 0
    x = [_avg(5, 5).requires_grad_(), _avg(5, 6).requires_grad_()]
    losses = orpo_loss(*x, beta=1 / 3)[0]
    gw, gl = torch.autograd.grad(losses.sum(), x)
    f = sp.lambdify((uw, ul), expr)
    fw, fl = sp.lambdify((uw, ul), gw_expr), sp.lambdify((uw, ul), gl_expr)
    for i in range(5):
        p = (float(x[0][i]), float(x[1][i]))
        assert abs(f(*p) - float(losses[i])) <= 1e-12
        assert abs(fw(*p) - float(gw[i])) <= 1e-12 and abs(fl(*p) - float(gl[i])) <= 1e-12


def test_simpo_is_dpo_on_averages_without_reference_with_margin():
    uw, ul = _avg(7, 1), _avg(7, 2)
    zero = torch.zeros_like(uw)
    simpo = cpo_loss(uw, ul, beta=2.5, loss_type="simpo", simpo_gamma=1.5)[0]
    dpo = lossbook.dpo_loss(uw - 1.5 / 2.5, ul, zero, zero, beta=2.5)[0]
    assert torch.allclose(simpo, dpo, atol=1e-12)
    sigmoid = cpo_loss(uw, ul, beta=2.5, loss_type="sigmoid")[0]
    assert torch.allclose(sigmoid, lossbook.dpo_loss(uw, ul, zero, zero, beta=2.5)[0], atol=1e-12)


@pytest.mark.parametrize("setting", [{"loss_type": t} for t in LOSS_TYPES] + [{"loss_type": "simpo", "alpha": 0.3},
                                                                              {"loss_type": "ipo", "alpha": -0.3}])
def test_gradcheck(setting):
    x = (_avg(4, 7).requires_grad_(), _avg(4, 8).requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: cpo_loss(a, b, beta=0.6, **setting)[0], x)
    assert torch.autograd.gradcheck(lambda a, b: orpo_loss(a, b, beta=0.6)[0], x)


def test_log1mexp_both_branches_and_the_naive_forms_fail():
    xs = torch.tensor([-20.0, -1.0, -0.7, -0.69, -1e-3, -1e-7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(log1mexp, (xs[:-1].detach().requires_grad_(),))  # finite steps of 1e-6 near 0
    exact = torch.tensor([math.log(-math.expm1(v)) for v in xs.tolist()], dtype=torch.float64)
    x32 = xs.detach().float()
    assert torch.allclose(log1mexp(x32).double(), exact, rtol=1e-6)
    naive = torch.log(1 - torch.exp(x32)).double()
    assert (naive - exact).abs()[-1] > 0.1  # near 0 the naive form loses its digits
    far = torch.tensor([-30.0])
    assert float(torch.log(-torch.expm1(far))) == 0.0 and float(log1mexp(far)) < 0  # the other branch's need
    assert math.isinf(float(log1mexp(torch.tensor(0.0))))


def test_alphapo_reward_tends_to_log_p():
    u = _avg(5, 9)
    for alpha in (1e-6, -1e-6):
        got = cpo_loss(u, u - 0.1, beta=1.0, alpha=alpha)[1]
        assert torch.allclose(got, u, atol=1e-5)


def test_half_precision_orpo_is_computed_in_float32():
    a, b = _avg(3, 1).half(), _avg(3, 2).half()
    out = orpo_loss(a, b)
    assert out[0].dtype == torch.float32
    assert torch.allclose(out[0], orpo_loss(a.float(), b.float())[0])


# ---------------------------------------------------------------- errors and registry


def test_cpo_loss_errors():
    a, b = _avg(3, 1), _avg(3, 2)
    with pytest.raises(ValueError, match=r"policy_chosen_logps has shape \[3\] but policy_rejected_logps has shape"):
        cpo_loss(a, b[:2])
    with pytest.raises(ValueError, match="only simpo has a margin"):
        cpo_loss(a, b, simpo_gamma=1.0)
    cpo_loss(a, b, simpo_gamma=0.5)  # TRL's default is accepted with every type
    for t in ("hinge", "ipo"):
        with pytest.raises(ValueError, match=f"{t} does not read it"):
            cpo_loss(a, b, loss_type=t, label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        cpo_loss(a, b, label_smoothing=0.5)
    with pytest.raises(ValueError, match="alphapo"):
        cpo_loss(a, b, loss_type="alphapo")
    with pytest.raises(ValueError, match="AlphaPO's reward needs log-probs <= 0"):
        cpo_loss(-a, b, alpha=0.5)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        cpo_loss(a, b, beta=-1.0)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        cpo_loss(a, b, alpha="0.1")
    with pytest.raises(TypeError, match="policy_chosen_logps"):
        cpo_loss(a.long(), b)
    with pytest.raises(ValueError, match=r"policy_rejected_logps \(shape \[3\]\) holds NaN at 1 of 3 pairs"):
        cpo_loss(a, b.where(torch.arange(3) != 0, torch.nan))
    with pytest.raises(ValueError, match="cpo_alpha = 0"):  # what TRL's alias really does
        cpo_loss(a, b, loss_type="alphapo")


def test_orpo_loss_errors():
    a, b = _avg(3, 1), _avg(3, 2)
    with pytest.raises(ValueError, match="log-prob >= 0"):
        orpo_loss(torch.zeros(3, dtype=torch.float64), b)
    with pytest.raises(ValueError, match=r"\[batch\]"):
        orpo_loss(a[None], b[None])
    with pytest.raises(ValueError, match="beta"):
        orpo_loss(a, b, beta=float("inf"))
    with pytest.raises(ValueError, match="policy_chosen_logps .* holds NaN"):
        orpo_loss(a.where(torch.arange(3) != 2, torch.nan), b)
    with pytest.raises(ValueError, match="holds -inf"):
        orpo_loss(a, b.where(torch.arange(3) != 2, -torch.inf))


def test_registry_docstrings_and_export():
    assert tuple(LOSS_FUNCTIONS) == LOSS_TYPES
    assert lossbook.cpo_loss is cpo_loss and lossbook.orpo_loss is orpo_loss
    for fn in LOSS_FUNCTIONS.values():
        assert "TRL 1.16" in fn.__doc__ and "20" in fn.__doc__


def test_cpo_logps_picks_trls_reduction():
    from lossbook.demos.dpo import tiny_pair_models
    from lossbook.dpo import pair_logps
    from lossbook.reference_free import cpo_logps

    policy, _, batch = tiny_pair_models(seed=0)
    with torch.no_grad():
        for t in LOSS_TYPES:
            got = cpo_logps(policy, batch, t)
            want = pair_logps(policy, batch, average=t in AVERAGED)
            assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_bug_zoo_reference_free_exhibits_fail_the_check():
    from lossbook.bugzoo import reference_free as zoo
    from lossbook.checks import compare_losses
    from lossbook.demos import reference_free as demo

    for kind, right, bugs in (("simpo_logits", demo.simpo_from_logits, [zoo.simpo_on_summed_logps]),
                              ("simpo", demo.simpo_from_logps, [zoo.simpo_margin_added,
                                                                zoo.simpo_margin_not_divided_by_beta]),
                              ("orpo", demo.orpo_from_logps, [zoo.orpo_naive_log1mexp])):
        cases = demo.zoo_cases(kind)
        assert compare_losses(right, right, cases).passed
        for bug in bugs:
            assert not compare_losses(bug, right, cases, atol=1e-5).passed, bug.__name__


def test_length_widget_numbers():
    from lossbook.widgets.kto import LengthRewards

    w = LengthRewards(length=8, token_logp=-1.0, token_logratio=0.1, beta=0.1, simpo_beta=2.0)
    r = w.rewards
    assert math.isclose(r["DPO (summed log-ratio)"], 0.1 * 8 * 0.1, rel_tol=1e-9)
    assert math.isclose(r["CPO (summed log-prob)"], 0.1 * 8 * -1.0, rel_tol=1e-9)  # log p / token is the policy's
    assert math.isclose(r["SimPO (average log-prob)"], 2.0 * -1.0, rel_tol=1e-9)
    w.length.value = 32
    assert math.isclose(w.rewards["SimPO (average log-prob)"], r["SimPO (average log-prob)"], rel_tol=1e-12)
    assert w.rewards["CPO (summed log-prob)"] == pytest.approx(4 * r["CPO (summed log-prob)"])


def test_demo_pairs_quality_is_independent_of_length_and_splits_differ():
    from lossbook.demos import reference_free as demo

    ref = demo.pretrain_reference(seed=0, steps=20, progress=False)
    pairs = demo.make_pairs(ref, 64, seed=1)
    b = pairs.batch
    for side in ("chosen", "rejected"):
        ids, mask = b[f"{side}_ids"], b[f"{side}_mask"]
        assert (mask.sum(-1) == getattr(pairs, f"{side}_len") + 1).all()  # content tokens and EOS
        assert (ids[:, demo.PROMPT_LEN:][mask[:, demo.PROMPT_LEN:] == 0] == demo.PAD).all()
    q = [demo.quality(c) for c in ([t for t in row if t in demo.GOOD + demo.BAD] for row in b["chosen_ids"].tolist())]
    q_l = [demo.quality(c)
           for c in ([t for t in row if t in demo.GOOD + demo.BAD] for row in b["rejected_ids"].tolist())]
    assert all(a > c for a, c in zip(q, q_l))
    other = demo.make_pairs(ref, 64, seed=2)
    assert not torch.equal(other.batch["chosen_ids"], b["chosen_ids"])
    assert demo.quality([], True) == 0.0 and demo.quality([4, 7], False) == 0.0 and demo.quality([4, 7]) == 0.5
