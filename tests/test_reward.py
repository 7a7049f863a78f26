"""Chapter 07: pairwise_reward_loss, preference_probs, pairwise_accuracy and last_token_rewards against TRL's
RewardTrainer (built offline), transformers' pooling, sympy and autograd; errors, bug zoo, widgets, demo data."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from lossbook import pairwise_accuracy, pairwise_reward_loss, preference_probs
from lossbook.bugzoo import reward as zoo
from lossbook.checks import compare_losses
from lossbook.demos import reward as demo
from lossbook.derivations import reward as dr
from lossbook.reward import last_token_rewards
from lossbook.widgets.reward import PreferenceShapes, RewardExplorer

TOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.bfloat16: 0.0, torch.float16: 0.0}
PAIRS = {
    "chosen": ["a fine answer.", "yes!", "ok", "the sun is a star."],
    "rejected": ["no", "bad bad", "terrible, really.", "the sun is cold."],
    "margin": [0.0, 1.5, 3.0, 0.5],
}


# --- TRL's RewardTrainer, built offline ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(trl):
    return demo.char_tokenizer()


@pytest.fixture(scope="module")
def trainer(trl, tokenizer, tmp_path_factory):
    model = demo.tiny_trl_reward_model(tokenizer, seed=0)
    return demo.trl_reward_trainer(model, tokenizer, PAIRS, str(tmp_path_factory.mktemp("trl")))


def _trl_batch(trainer, with_margin=True):
    """The collator's batch: chosen rows then rejected rows, right-padded; the margin column."""
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    if not with_margin:
        examples = [{k: v for k, v in e.items() if k != "margin"} for e in examples]
    return trainer.data_collator(examples)


def _rewards_one_by_one(model, ids_list):
    """Each sequence alone, unpadded: an independent route to the rewards TRL computes on a padded batch."""
    return torch.cat([model(input_ids=torch.tensor([ids])).logits for ids in ids_list])  # [batch, 1]


@pytest.mark.parametrize("coef", [None, 0.01, 0.3])
@pytest.mark.parametrize("with_margin", [False, True])
def test_trl_reward_trainer_compute_loss(trainer, coef, with_margin):
    model = trainer.model
    model.train()
    trainer.args.center_rewards_coefficient = coef
    batch = _trl_batch(trainer, with_margin)
    trainer._metrics["train"].clear()

    model.zero_grad()
    theirs = trainer.compute_loss(model, dict(batch))
    theirs.backward()
    their_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    r_c = _rewards_one_by_one(model, trainer.train_dataset["chosen_ids"])  # [batch, 1]
    r_r = _rewards_one_by_one(model, trainer.train_dataset["rejected_ids"])  # [batch, 1]
    ours = pairwise_reward_loss(r_c, r_r, margin=batch["margin"] if with_margin else None,
                                center_rewards_coefficient=coef)
    ours.backward()

    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    for ours_g, theirs_g in zip((p.grad for p in model.parameters()), their_grads):
        torch.testing.assert_close(ours_g, theirs_g, atol=1e-6, rtol=1e-5)
    assert trainer._metrics["train"]["accuracy"][-1] == pytest.approx(float(pairwise_accuracy(r_c, r_r)))
    if with_margin:  # the margin changes the loss: the comparison above is not blind to it
        without = pairwise_reward_loss(r_c, r_r, center_rewards_coefficient=coef).detach()
        assert abs(float(without - ours.detach())) > 1e-3
    trainer.args.center_rewards_coefficient = None


def trl_loss(trainer):
    return demo.trl_loss_on_rewards(trainer)


def _grads(fn, case):
    args = dict(case)
    leaves = {k: args[k].detach().clone().requires_grad_(True) for k in ("rewards_chosen", "rewards_rejected")}
    args.update(leaves)
    out = fn(**args)
    out.backward()
    return out.detach(), leaves["rewards_chosen"].grad, leaves["rewards_rejected"].grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_values_and_gradients_as_trl_on_every_case(trainer, seed, dtype):
    reference = trl_loss(trainer)
    for case in demo.reward_cases(seed, dtype=dtype):
        ours, theirs = _grads(pairwise_reward_loss, case), _grads(reference, case)
        assert ours[0].dtype == theirs[0].dtype and ours[0].shape == theirs[0].shape == ()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b.reshape(a.shape), atol=TOL[dtype], rtol=TOL[dtype])


def test_trl_accuracy_metric_matches_and_counts_ties_as_wrong(trainer):
    r_c = torch.tensor([1.0, 0.0, 2.0, -1.0])
    r_r = torch.tensor([0.0, 0.0, 3.0, -2.0])  # right, tie, wrong, right
    trainer.model.train()
    trainer._metrics["train"].clear()
    trl_loss(trainer)(r_c, r_r)
    assert trainer._metrics["train"]["accuracy"][-1] == float(pairwise_accuracy(r_c, r_r)) == 0.5


def test_last_token_rewards_is_transformers_pooling(trainer):
    """lossbook's pooling of per-position scores equals the reward transformers' sequence-classification head
    returns (it pools at the last non-pad token), on a right-padded batch."""
    model = trainer.model.eval()
    batch = _trl_batch(trainer)
    with torch.no_grad():
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        values = model.score(hidden)  # [2 * batch, seq, 1]: a reward at every position
        pooled = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [2B, 1]
    torch.testing.assert_close(last_token_rewards(values, batch["attention_mask"]), pooled.squeeze(-1))
    padded = batch["attention_mask"][:, -1] == 0
    assert padded.any()  # the batch is right-padded, so the last position is a pad for some rows ...
    wrong = zoo.reward_at_last_position(values, batch["attention_mask"])
    assert not torch.allclose(wrong[padded], pooled.squeeze(-1)[padded])  # ... where reading it is wrong


# --- sympy and autograd ------------------------------------------------------------------------------------------

def test_bradley_terry_from_gumbel_utilities():
    delta = sp.Symbol("delta", real=True)
    integrand_e, integrand_t, value = dr.bradley_terry_from_gumbel(delta)
    e, t = sp.Symbol("e", real=True), sp.Symbol("t", positive=True)
    assert sp.simplify(integrand_e.subs(e, -sp.log(t)) / t - integrand_t) == 0  # the substitution t = exp(-e)
    assert sp.simplify(value - dr.sigmoid(delta)) == 0
    assert sp.simplify(value.subs(delta, 1) - sp.E / (1 + sp.E)) == 0  # a definite value at delta = 1 ...
    assert sp.simplify(dr.sigmoid(-delta).subs(delta, 1) - 1 / (1 + sp.E)) == 0  # ... not the mirrored one
    # the e-integral itself, numerically (trapezoid rule on a fine grid), at delta = 0.7
    grid = torch.linspace(-20.0, 40.0, 600_001, dtype=torch.float64)
    density = sp.lambdify(e, integrand_e.subs(delta, sp.Rational(7, 10)), "math")
    numeric = torch.trapezoid(torch.tensor([density(float(x)) for x in grid[::100]]), grid[::100])
    assert abs(float(numeric) - 1 / (1 + math.exp(-0.7))) < 1e-6


def test_pairwise_loss_gradients_two_way_form_and_shift_invariance():
    r_c, r_r, m, s, lam = dr.symbols()
    loss = dr.pairwise_loss(r_c, r_r, m)
    g_c, g_r = dr.pairwise_loss_grads(r_c, r_r, m)
    assert sp.simplify(sp.diff(loss, r_c) - g_c) == 0
    assert sp.simplify(sp.diff(loss, r_r) - g_r) == 0
    assert sp.simplify(sp.diff(loss, r_c) + sp.diff(loss, r_r)) == 0
    point = {r_c: 0, r_r: 0, m: 1}
    assert sp.simplify(g_c.subs(point) + sp.E / (1 + sp.E)) == 0
    added = sp.diff(-sp.log(dr.sigmoid(r_c - r_r + m)), r_c).subs(point)
    assert sp.simplify(added + 1 / (1 + sp.E)) == 0  # margin added: a different pull at the same point
    assert sp.simplify(dr.two_way_cross_entropy(r_c, r_r) - dr.pairwise_loss(r_c, r_r)) == 0
    assert sp.simplify(dr.pairwise_loss(r_c + s, r_r + s, m) - loss) == 0
    center = dr.centering_term(r_c, r_r, lam)
    shifted = center.subs({r_c: r_c + s, r_r: r_r + s}, simultaneous=True)
    assert sp.expand(shifted - center - 4 * lam * s * (r_c + r_r + s)) == 0  # centering sees the shift
    c_c, c_r = dr.centering_grads(r_c, r_r, lam)
    assert sp.simplify(sp.diff(center, r_c) - c_c) == 0 and sp.simplify(sp.diff(center, r_r) - c_r) == 0


def test_sympy_batch_loss_equals_lossbook_and_its_gradient_equals_autograd():
    g = torch.Generator().manual_seed(3)
    chosen, rejected = list(sp.symbols("c0:4", real=True)), list(sp.symbols("q0:4", real=True))
    margins, lam = list(sp.symbols("m0:4", nonnegative=True)), sp.Symbol("lambda", nonnegative=True)
    expr = dr.pairwise_batch_loss(chosen, rejected, margins, lam)
    symbols = [*chosen, *rejected, *margins, lam]
    f = sp.lambdify(symbols, expr)
    grad_f = sp.lambdify(symbols, [sp.diff(expr, v) for v in chosen + rejected])
    for _ in range(5):
        r_c = (3 * torch.randn(4, generator=g, dtype=torch.float64)).requires_grad_(True)
        r_r = (3 * torch.randn(4, generator=g, dtype=torch.float64)).requires_grad_(True)
        margin = torch.tensor(demo.MARGIN_LEVELS, dtype=torch.float64)[torch.randint(0, 3, (4,), generator=g)]
        coef = float(torch.rand((), generator=g, dtype=torch.float64)) / 10
        values = [*r_c.tolist(), *r_r.tolist(), *margin.tolist(), coef]
        loss = pairwise_reward_loss(r_c, r_r, margin, center_rewards_coefficient=coef)
        loss.backward()
        assert abs(loss.item() - f(*values)) < 1e-12
        torch.testing.assert_close(torch.cat([r_c.grad, r_r.grad]), torch.tensor(grad_f(*values)),
                                   atol=1e-12, rtol=1e-12)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    r_c = torch.randn(5, 1, generator=g, dtype=torch.float64, requires_grad=True)
    r_r = torch.randn(5, 1, generator=g, dtype=torch.float64, requires_grad=True)
    margin = torch.rand(5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, m: pairwise_reward_loss(a, b, m, 0.1), (r_c, r_r, margin))
    assert torch.autograd.gradcheck(lambda a, b: preference_probs(a, b), (r_c, r_r))


def test_preference_probs_is_seed_000_and_bradley_terry():
    g = torch.Generator().manual_seed(5)
    for shape in [(4,), (4, 1), (4, 3), (1, 2)]:
        r_c, r_r = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        probs = preference_probs(r_c, r_r)
        assert probs.shape == (shape[0], 2)
        torch.testing.assert_close(probs.sum(1), torch.ones(shape[0]))
        mean_c = r_c.reshape(shape[0], -1).mean(1)
        mean_r = r_r.reshape(shape[0], -1).mean(1)
        torch.testing.assert_close(probs[:, 0], torch.sigmoid(mean_c - mean_r))  # closed form, independent
    # sympy: softmax of the means, entry 0, for k = 2
    a, b = sp.symbols("a0:2", real=True), sp.symbols("b0:2", real=True)
    p = dr.preference_prob(a, b)
    assert sp.simplify(p - dr.sigmoid((a[0] + a[1]) / 2 - (b[0] + b[1]) / 2)) == 0


# --- errors ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((torch.zeros(3), torch.zeros(3, 1)), {}, ValueError,
         r"rewards_chosen \[3\] and rewards_rejected \[3, 1\] must have the same shape"),
        ((torch.zeros(3, 2), torch.zeros(3, 2)), {}, ValueError, r"\[batch\] or \[batch, 1\].*got \[3, 2\]"),
        ((torch.zeros(3), torch.zeros(3)), {"margin": torch.zeros(4)}, ValueError,
         r"margin must have shape \[3\] \(one per pair\) or the rewards' shape \[3\], got \[4\]"),
        ((torch.zeros(3, 1), torch.zeros(3, 1)), {"margin": torch.zeros(1, 3)}, ValueError,
         r"margin must have shape \[3\].*got \[1, 3\]"),
        ((torch.zeros(3), torch.zeros(3)), {"margin": torch.zeros(3, dtype=torch.bool)}, TypeError, r"margin"),
        ((torch.zeros(3, dtype=torch.long), torch.zeros(3)), {}, TypeError, r"rewards_chosen must be a floating"),
        ((torch.zeros(3), [0.0, 0.0, 0.0]), {}, TypeError, r"rewards_rejected must be a torch.Tensor"),
        ((torch.zeros(3), torch.zeros(3)), {"center_rewards_coefficient": -0.1}, ValueError,
         r"center_rewards_coefficient must be a finite number >= 0, got -0.1"),
        ((torch.zeros(3), torch.zeros(3)), {"center_rewards_coefficient": "0.1"}, TypeError,
         r"center_rewards_coefficient must be a number"),
    ],
)
def test_clear_errors(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        pairwise_reward_loss(*args, **kwargs)


def test_pairwise_accuracy_refuses_nan_rewards():
    """TRL's (r_c > r_r).float().mean() counts a NaN pair as wrong: a diverged model reads as accuracy 0."""
    nan = float("nan")
    r_c, r_r = torch.tensor([nan, nan]), torch.tensor([-1.0, -2.0])
    assert float((r_c > r_r).float().mean()) == 0.0  # RewardTrainer.compute_loss's accuracy, silently
    with pytest.raises(ValueError, match=r"rewards_chosen holds NaN at pairs \[0, 1\] \(shape \[2\]\)"):
        pairwise_accuracy(r_c, r_r)
    with pytest.raises(ValueError, match=r"rewards_rejected holds NaN at pairs \[1\] \(shape \[3, 1\]\)"):
        pairwise_accuracy(torch.zeros(3, 1), torch.tensor([[0.0], [nan], [1.0]]))
    inf = float("inf")  # infinite rewards still have an order
    assert float(pairwise_accuracy(torch.tensor([inf, 0.0]), torch.tensor([0.0, inf]))) == 0.5


def test_other_errors():
    with pytest.raises(ValueError, match=r"rewards_chosen \[2, 3\] and rewards_rejected \[2, 1\]"):
        preference_probs(torch.zeros(2, 3), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"\[batch\] or \[batch, 1\]"):
        pairwise_accuracy(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"attention_mask \[2, 3\] has rows with no real token: \[1\]"):
        last_token_rewards(torch.zeros(2, 3), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of values \[2, 3\].*got \[2, 4\]"):
        last_token_rewards(torch.zeros(2, 3), torch.ones(2, 4))


def test_margin_forms_agree_and_are_never_broadcast():
    r_c, r_r = torch.randn(4, 1), torch.randn(4, 1)
    margin = torch.tensor([0.0, 1.5, 3.0, 1.5])
    as_column = pairwise_reward_loss(r_c, r_r, margin)
    assert as_column == pairwise_reward_loss(r_c, r_r, margin[:, None])
    assert as_column == pairwise_reward_loss(r_c.squeeze(1), r_r.squeeze(1), margin)
    assert pairwise_reward_loss(r_c, r_r, 1.5) == pairwise_reward_loss(r_c, r_r, torch.full((4,), 1.5))
    assert zoo.seed_margin_broadcast(r_c, r_r, margin) != as_column  # seed 000 broadcasts to [4, 4]


def test_margin_edge_cases_and_zero_coefficient():
    r_c, r_r = torch.randn(4), torch.randn(4)
    assert pairwise_reward_loss(r_c, r_r, torch.tensor(1.5)) == pairwise_reward_loss(r_c, r_r, 1.5)  # 0-dim
    for bad in (float("nan"), float("inf"), torch.tensor([0.0, float("nan"), 1.0, 1.0])):
        with pytest.raises(ValueError, match="margin"):
            pairwise_reward_loss(r_c, r_r, bad)
    inf = torch.tensor([float("inf"), 0.0])
    assert pairwise_reward_loss(inf, torch.zeros(2), center_rewards_coefficient=0) == pairwise_reward_loss(
        inf, torch.zeros(2))  # 0 adds nothing (not 0 * inf = NaN)
    with pytest.raises(ValueError, match=r"at least one output per pair, got \[3, 0\]"):
        preference_probs(torch.zeros(3, 0), torch.zeros(3, 0))


def test_extremes_are_finite_and_empty_batch_is_nan():
    loss = pairwise_reward_loss(torch.tensor([-60.0]), torch.tensor([60.0]))
    assert float(loss) == pytest.approx(120.0)
    assert math.isnan(float(pairwise_reward_loss(torch.zeros(0), torch.zeros(0))))


# --- bug zoo, widgets, demo --------------------------------------------------------------------------------------

def test_lossbook_passes_and_every_exhibit_fails_the_check(trainer):
    cases = demo.reward_cases(0)
    assert compare_losses(pairwise_reward_loss, trl_loss(trainer), cases).passed
    for bug in (zoo.swapped_pair, zoo.margin_added, zoo.softmax_over_batch, zoo.log_of_sigmoid,
                zoo.seed_margin_broadcast):
        assert not compare_losses(bug, pairwise_reward_loss, cases).passed, bug.__name__
    cases = demo.padded_value_cases(0)
    assert compare_losses(last_token_rewards, last_token_rewards, cases).passed
    assert not compare_losses(zoo.reward_at_last_position, last_token_rewards, cases).passed


def test_log_of_sigmoid_overflows_where_logsigmoid_does_not():
    r_c, r_r = torch.tensor([-60.0], requires_grad=True), torch.tensor([60.0])
    assert math.isinf(zoo.log_of_sigmoid(r_c, r_r).item())
    loss = pairwise_reward_loss(r_c, r_r)
    loss.backward()
    assert loss.item() == pytest.approx(120.0) and r_c.grad.item() == pytest.approx(-1.0)


def test_reward_explorer_numbers_are_lossbooks():
    explorer = RewardExplorer()
    for r_c, r_r, m, lam in [(0.5, 1.0, 0.0, 0.0), (2.0, -1.0, 1.5, 0.05), (-3.0, 4.0, 3.0, 0.2)]:
        explorer.r_chosen.value, explorer.r_rejected.value = r_c, r_r
        explorer.margin.value, explorer.coefficient.value = m, lam
        r_ct = torch.tensor([r_c], dtype=torch.float64, requires_grad=True)
        r_rt = torch.tensor([r_r], dtype=torch.float64, requires_grad=True)
        loss = pairwise_reward_loss(r_ct, r_rt, m, lam)
        loss.backward()
        assert explorer.loss == pytest.approx(loss.item(), abs=1e-12)
        assert explorer.grads == pytest.approx((float(r_ct.grad), float(r_rt.grad)), abs=1e-12)
        assert explorer.closed_form == pytest.approx(explorer.grads, abs=1e-12)
        assert explorer.prob_chosen == pytest.approx(1 / (1 + math.exp(-(r_c - r_r))), abs=1e-12)
        assert f"{explorer.loss:.4f}" in explorer.html.value


def test_preference_shapes_widget():
    widget = PreferenceShapes(batch=2, k=1)
    widget.batch.value, widget.k.value = 4, 3
    assert widget.steps[1] == ("torch.stack(...)", [2, 4, 3]) and widget.steps[-1] == (".T", [4, 2])
    chosen, rejected = widget.tensors()
    torch.testing.assert_close(widget.probs[:, 0], torch.sigmoid(chosen.mean(1) - rejected.mean(1)))


def test_demo_pairs_follow_bradley_terry():
    pairs = demo.make_preference_pairs(20000, generator=torch.Generator().manual_seed(0))
    realised, expected = demo.bayes_accuracy(pairs)
    assert abs(realised - expected) < 0.01  # labels drawn from sigmoid(gap): agreement as predicted
    assert 0.75 < expected < 0.9  # noisy enough that 1.00 is impossible, clean enough to learn
    assert set(pairs["margin"].unique().tolist()) == set(demo.MARGIN_LEVELS)
    gap = pairs["true_gap"]
    assert float(gap[pairs["margin"] == 3.0].mean()) > float(gap[pairs["margin"] == 0].mean())
    first, second, label = demo.random_order(pairs, generator=torch.Generator().manual_seed(1))
    assert 0.45 < float(label.mean()) < 0.55
    torch.testing.assert_close(torch.where(label.bool()[:, None], first, second), pairs["chosen"])


def test_calibration_helpers():
    probs = torch.tensor([0.05, 0.15, 0.95, 0.85, 0.55])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0])
    mean_p, freq, count = demo.reliability(probs, labels)
    assert count == [1, 1, 1, 1, 1] and freq == [0.0, 0.0, 0.0, 1.0, 1.0]
    expected = (0.05 + 0.15 + 0.55 + 0.15 + 0.05) / 5
    assert demo.expected_calibration_error(probs, labels) == pytest.approx(expected)
