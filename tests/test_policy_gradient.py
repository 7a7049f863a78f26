"""Chapter 13: group_advantages, rloo_advantages and policy_gradient_loss against TRL 1.16's GRPOTrainer and
RLOOTrainer (real trainers, built offline), sympy, autograd and the bug zoo."""

from __future__ import annotations

import inspect

import pytest
import sympy as sp
import torch

import lossbook
from lossbook import group_advantages, policy_gradient_loss, sequence_logps
from lossbook.checks import compare_losses
from lossbook.derivations import policy_gradient as D
from lossbook.policy_gradient import (
    LOSS_FUNCTIONS,
    TRL_LOSS_TYPES,
    clipped_surrogate,
    k3_kl,
    rloo_advantages,
    token_logps,
)

# ---------------------------------------------------------------- TRL conformance: a real GRPOTrainer per type


@pytest.fixture(scope="module")
def conformance(trl):
    from lossbook.demos.policy_gradient import trl_conformance

    return {(row["loss_type"], row["beta"]): row for row in trl_conformance()}


def test_trl_has_exactly_these_loss_types(trl):
    from trl.trainer import grpo_trainer

    src = inspect.getsource(grpo_trainer.GRPOTrainer._compute_loss)
    found = []
    for line in src.splitlines():
        if "self.loss_type" in line and ("if " in line or "elif " in line):
            found += [t for t in TRL_LOSS_TYPES if f'"{t}"' in line and t not in found]
    assert set(found) == set(TRL_LOSS_TYPES) == set(LOSS_FUNCTIONS)


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", TRL_LOSS_TYPES)
def test_policy_gradient_loss_equals_trl_grpotrainer(conformance, loss_type, beta):
    row = conformance[(loss_type, beta)]
    assert row["diff"] <= 1e-5 * max(1.0, abs(row["trl"])), row
    assert row["grad_diff"] <= 1e-5 * max(1.0, row["grad_norm"]), row
    assert row["trl"] != 0 and row["grad_norm"] > 1e-3


def test_the_conformance_batch_tells_the_denominators_apart(conformance):
    """The TRL comparison can fail: on this batch every loss type's value differs from every other's (with beta 0),
    except dapo and bnpo, which agree on one micro-batch (their difference is under accumulation, below)."""
    values = {t: conformance[(t, 0.0)]["trl"] for t in TRL_LOSS_TYPES}
    for a in TRL_LOSS_TYPES:
        for b in TRL_LOSS_TYPES:
            if a < b and {a, b} != {"bnpo", "dapo"}:
                assert abs(values[a] - values[b]) > 1e-3, (a, b, values)
    assert conformance[("dapo", 0.04)]["trl"] != conformance[("dapo", 0.0)]["trl"]  # the KL term is in play


def test_two_accumulation_steps(trl):
    """dapo with TRL's global count sums to the full batch over two micro-batches; bnpo's local count does not."""
    from lossbook.demos.policy_gradient import trl_accumulation

    rows = {row["loss_type"]: row for row in trl_accumulation()}
    for row in rows.values():
        assert abs(row["micro"] - row["trl"]) <= 1e-5, row
    assert rows["dapo"]["diff"] <= 1e-5 and rows["dapo"]["grad_diff"] <= 1e-5
    assert rows["grpo"]["diff"] <= 1e-5 and rows["grpo"]["grad_diff"] <= 1e-5  # per-sequence: halves of equal size
    assert rows["bnpo"]["diff"] > 1e-3 and rows["bnpo"]["grad_diff"] > 1e-3


def test_advantages_equal_grpo_and_rloo_trainers(trl):
    from lossbook.demos.policy_gradient import trl_advantages

    rows = trl_advantages()
    assert len(rows) == 5
    for row in rows:
        assert row["diff"] <= 1e-6 and row["spread"] > 0, row


# ---------------------------------------------------------------- advantages by hand


@pytest.mark.parametrize("scale", ["group", "batch", "none", True, False])
def test_group_advantages_by_hand(scale):
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    groups = r.view(2, 4)
    mean = groups.mean(1, keepdim=True)
    std = {"group": groups.std(1, keepdim=True), True: groups.std(1, keepdim=True),
           "batch": r.std().expand(2, 1)}.get(scale)
    want = groups - mean if std is None else (groups - mean) / (std + 1e-4)
    torch.testing.assert_close(group_advantages(r, 4, scale_rewards=scale), want.view(-1))


def test_group_advantages_match_sympy():
    rs = sp.symbols("r0:3", real=True)
    values = {rs[0]: sp.Rational(3), rs[1]: sp.Rational(1), rs[2]: sp.Rational(-2)}
    got = group_advantages(torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64), 3)
    for i in range(3):
        want = float(D.group_advantage(list(rs), i, eps=sp.Rational(1, 10000)).subs(values))
        assert abs(float(got[i]) - want) <= 1e-12


def test_rloo_leave_one_out():
    r = torch.tensor([1.0, 0.0, 3.0, 2.0, 2.0, 5.0], dtype=torch.float64)
    want = torch.stack([r[i] - (r[(i // 3) * 3:(i // 3) * 3 + 3].sum() - r[i]) / 2 for i in range(6)])
    torch.testing.assert_close(rloo_advantages(r, 3), want)
    n = rloo_advantages(r, 3, normalize_advantages=True)
    torch.testing.assert_close(n, (want - want.mean()) / (want.std() + 1e-4))


def test_advantage_errors():
    with pytest.raises(ValueError, match=r"num_generations=4 does not divide the batch: rewards has shape \[6\]"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        group_advantages(torch.zeros(6), 1)
    with pytest.raises(ValueError, match="scale_rewards must be one of"):
        group_advantages(torch.zeros(6), 3, scale_rewards="prompt")
    with pytest.raises(ValueError, match="rewards must be finite"):
        rloo_advantages(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError, match=r"rewards must be \[batch\]"):
        group_advantages(torch.zeros(2, 3), 3)


# ---------------------------------------------------------------- per-token log-probs


def test_token_logps_sum_is_sequence_logps():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        z = torch.randn(3, 7, 11, generator=g).to(dtype)
        ids = torch.randint(0, 11, (3, 7), generator=g)
        mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 0, 0]])
        torch.testing.assert_close(token_logps(z, ids, mask).sum(-1), sequence_logps(z, ids, mask))


# ---------------------------------------------------------------- sympy and autograd


def test_token_weights_match_sympy():
    from lossbook.widgets.policy_gradient import token_weights

    lengths = [1, 4, 9, 2]
    got = token_weights(lengths, max_completion_length=9)
    for loss_type, w in got.items():
        want = D.token_loss_weights(loss_type, lengths, max_length=9, global_tokens=sum(lengths))
        assert [float(x) for x in want] == pytest.approx(w, abs=1e-12), loss_type


def test_clipped_gradient_matches_sympy():
    rho, A = sp.symbols("rho A", real=True)
    e, eh = sp.Rational(1, 5), sp.Rational(3, 10)
    obj, grad = D.clipped_objective(rho, A, e, eh), D.clipped_gradient(rho, A, e, eh)
    for a in (1.5, -0.5):
        for x in (0.5, 0.79, 0.81, 1.0, 1.29, 1.31, 2.0):
            logp = torch.tensor([[float(torch.log(torch.tensor(x, dtype=torch.float64)))]], dtype=torch.float64,
                                requires_grad=True)
            loss = policy_gradient_loss(logp, torch.zeros(1, 1, dtype=torch.float64),
                                        torch.tensor([a], dtype=torch.float64), torch.ones(1, 1), loss_type="bnpo",
                                        epsilon=0.2, epsilon_high=0.3)
            (gl,) = torch.autograd.grad(loss, logp)
            assert -float(loss.detach()) == pytest.approx(float(obj.subs({rho: x, A: a})), abs=1e-12)
            assert -float(gl) / x == pytest.approx(float(grad.subs({rho: x, A: a})), abs=1e-12)


def test_reinforce_baseline_and_kl_estimators():
    theta, pi = D.categorical_policy(3)
    r = sp.symbols("r0:3", real=True)
    assert sp.simplify(sp.diff(D.expected_reward(pi, r), theta[1]) - D.score_function_gradient(pi, r, theta[1])) == 0
    assert sp.simplify(D.baseline_term(pi, sp.Symbol("b"), theta[2])) == 0
    p0, q0 = sp.symbols("p0 q0", positive=True)
    p, q = [p0, 1 - p0], [q0, 1 - q0]
    kl = D.kl_categorical(p, q)
    e3 = D.expected_under(p, [D.k3(sp.log(a), sp.log(b)) for a, b in zip(p, q)])
    assert sp.simplify(sp.expand_log(e3 - kl, force=True)) == 0
    # k3 in torch is the sympy expression, and never negative
    x = torch.linspace(-5, 5, 41, dtype=torch.float64)
    got = k3_kl(torch.zeros_like(x), x)
    want = torch.tensor([float(D.k3(0, sp.Float(v))) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(got, want)
    assert (got >= 0).all() and (D.k1(-2, -1) < 0)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "sapo", "luspo"])
def test_gradcheck(loss_type):
    g = torch.Generator().manual_seed(3)
    logp = (-torch.rand(3, 5, generator=g, dtype=torch.float64) * 2).requires_grad_()
    old = logp.detach() + 0.1 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    ref = logp.detach() + 0.2 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 0.7], dtype=torch.float64)
    mask = (torch.arange(5)[None] < torch.tensor([5, 2, 1])[:, None]).long()
    kw = {"importance_sampling_level": "sequence"} if loss_type == "luspo" else {}
    assert torch.autograd.gradcheck(
        lambda lp: policy_gradient_loss(lp, old, adv, mask, loss_type=loss_type, beta=0.04, ref_per_token_logps=ref,
                                        **kw), (logp,))


def test_cispo_and_vespo_gradients_are_stop_gradient_reinforce():
    """Their gradient is -w A d logp / N with the weight w treated as a constant."""
    g = torch.Generator().manual_seed(4)
    logp = (-torch.rand(2, 4, generator=g, dtype=torch.float64)).requires_grad_()
    old = logp.detach() + 0.2 * torch.randn(2, 4, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    loss = policy_gradient_loss(logp, old, adv, mask, loss_type="cispo", epsilon_high=1.1)
    (gr,) = torch.autograd.grad(loss, logp)
    w = torch.exp(logp.detach() - old).clamp(max=1.1)
    torch.testing.assert_close(gr, -w * adv[:, None] * mask / mask.sum())


def test_on_policy_ratio_is_one_and_loss_types_reduce_to_reinforce():
    """old=None is the detached policy: every clip type's gradient is then -A w d logp (section 1's weights)."""
    logp = torch.full((2, 3), -1.0, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    loss = policy_gradient_loss(logp, None, adv, mask, loss_type="grpo")
    (gr,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(gr, torch.tensor([[-1 / 6, -1 / 6, -1 / 6], [1.0, 0, 0]], dtype=torch.float64))


# ---------------------------------------------------------------- clear errors


def _args():
    return torch.zeros(2, 3), None, torch.ones(2), torch.ones(2, 3)


@pytest.mark.parametrize("change, error, message", [
    ({"completion_mask": torch.ones(2, 2)}, ValueError, r"completion_mask must have per_token_logps' shape \[2, 3\], "
                                                        r"got \[2, 2\]"),
    ({"completion_mask": 2 * torch.ones(2, 3)}, ValueError, "completion_mask must hold only 0 and 1"),
    ({"advantages": torch.ones(3)}, ValueError, r"advantages must have shape \[2\] or \[2, 3\].*got \[3\]"),
    ({"advantages": torch.ones(2, requires_grad=True)}, ValueError, r"advantages require grad.*detach"),
    ({"old_per_token_logps": torch.zeros(2, 4)}, ValueError, r"old_per_token_logps must have .* got \[2, 4\]"),
    ({"per_token_logps": torch.zeros(2, 3, dtype=torch.long)}, TypeError, "per_token_logps must be a floating"),
    ({"per_token_logps": torch.full((2, 3), float("nan"))}, ValueError, r"per_token_logps holds NaN \(shape \[2, 3"),
    ({"old_per_token_logps": torch.full((2, 3), float("nan"))}, ValueError, "old_per_token_logps holds NaN"),
    ({"advantages": torch.tensor([1.0, float("nan")])}, ValueError, r"advantages must be finite, got NaN .*\[2\]"),
])
def test_bad_tensors(change, error, message):
    names = ("per_token_logps", "old_per_token_logps", "advantages", "completion_mask")
    args = dict(zip(names, _args()))
    args.update(change)
    with pytest.raises(error, match=message):
        policy_gradient_loss(*args.values())


def test_old_and_reference_with_autograd_are_refused():
    live = torch.zeros(2, 3, requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"old_per_token_logps was computed with autograd on \(grad_fn=\w+\)"):
        policy_gradient_loss(torch.zeros(2, 3), live, torch.ones(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"ref_per_token_logps was computed with autograd on"):
        policy_gradient_loss(torch.zeros(2, 3), None, torch.ones(2), torch.ones(2, 3), beta=0.1,
                             ref_per_token_logps=live)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"loss_type": "ppo"}, ValueError, "loss_type must be one of"),
    ({"loss_type": "sapo", "delta": 2.0}, TypeError, r"'sapo' does not use \['delta'\]; delta is read by"),
    ({"loss_type": "grpo", "num_items_in_batch": 10}, TypeError, r"'grpo' does not use \['num_items_in_batch'\]"),
    ({"loss_type": "dapo", "max_completion_length": 9}, TypeError, r"does not use \['max_completion_length'\]"),
    ({"loss_type": "grpo", "sapo_temperature_pos": 2.0}, TypeError, r"does not use \['sapo_temperature_pos'\]"),
    ({"loss_type": "cispo"}, ValueError, "caps the ratio itself at epsilon_high"),
    ({"beta": 0.1}, ValueError, "beta=0.1 needs ref_per_token_logps"),
    ({"ref_per_token_logps": torch.zeros(2, 3)}, TypeError, "ref_per_token_logps is given but beta=0.0"),
    ({"beta": -1.0, "ref_per_token_logps": torch.zeros(2, 3)}, ValueError, "beta must be >= 0"),
    ({"importance_sampling_level": "batch"}, ValueError, "importance_sampling_level must be"),
    ({"num_items_in_batch": 0}, ValueError, "num_items_in_batch must be a positive"),
    ({"epsilon": float("nan")}, TypeError, "epsilon must be a finite real number"),
    ({"loss_type": "dr_grpo", "max_completion_length": 2}, ValueError,
     r"max_completion_length=2 is shorter than a completion of 3 tokens \(completion_mask of shape \[2, 3\]\)"),
])
def test_bad_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        policy_gradient_loss(*_args(), **kwargs)


def test_defaults_equal_explicit_values():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 5, generator=g)
    old = logp + 0.2 * torch.randn(4, 5, generator=g)
    adv = torch.randn(4, generator=g)
    mask = (torch.arange(5)[None] < torch.tensor([5, 3, 1, 4])[:, None]).long()
    base = policy_gradient_loss(logp, old, adv, mask)  # dapo
    torch.testing.assert_close(base, policy_gradient_loss(logp, old, adv, mask, num_items_in_batch=int(mask.sum()),
                                                          epsilon_high=0.2))
    torch.testing.assert_close(policy_gradient_loss(logp, old, adv, mask, loss_type="dr_grpo"),
                               policy_gradient_loss(logp, old, adv, mask, loss_type="dr_grpo",
                                                    max_completion_length=5))
    # [batch, seq] advantages equal to the broadcast [batch] ones
    torch.testing.assert_close(base, policy_gradient_loss(logp, old, adv[:, None].expand(4, 5), mask))
    assert lossbook.policy_gradient_loss is policy_gradient_loss


# ---------------------------------------------------------------- bug zoo and exercise references


def test_bugzoo_fails_the_check():
    from lossbook.bugzoo import policy_gradient as zoo
    from lossbook.demos import policy_gradient as demo

    cases = demo.pg_cases(seed=0)
    assert compare_losses(demo.reference_loss, demo.reference_loss, cases).passed
    assert not compare_losses(zoo.advantages_not_detached, demo.shaped_reference_loss, cases, atol=1e-6).passed
    for bug in (zoo.mean_over_padded_tokens, zoo.live_old_policy, zoo.clipped_advantage, zoo.local_count):
        assert not compare_losses(bug, demo.reference_loss, cases, atol=1e-6).passed, bug.__name__
    assert not compare_losses(zoo.k1_penalty, demo.reference_loss, demo.pg_cases(seed=0, beta=0.1),
                              atol=1e-6).passed


def test_exercise_references():
    from lossbook.demos import policy_gradient as demo

    for case in demo.accumulation_cases():
        full = policy_gradient_loss(case["per_token_logps"], case["old_per_token_logps"], case["advantages"],
                                    case["completion_mask"])
        torch.testing.assert_close(demo.accumulated_dapo(**case), full)
    for case in demo.surrogate_cases():
        assert clipped_surrogate(**case).shape == case["coef_1"].shape
