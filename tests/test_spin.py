"""Chapter 10: spin_loss and the SPIN trainer against DPO, TRL, transformers' samplers, sympy and autograd."""

from __future__ import annotations

import copy

import pytest
import sympy as sp
import torch

import lossbook
from lossbook import dpo_loss, sequence_logps, spin_loss
from lossbook.bugzoo import spin as zoo
from lossbook.demos import spin as demo
from lossbook.derivations import dpo as ddpo
from lossbook.derivations import spin as D
from lossbook.spin import SPINTrainer, ema_update_, filter_logits, sample_completions


def _logps(batch=6, seed=0, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(batch, generator=g, dtype=torch.float64) - 10).to(dtype) for _ in range(4)]


# ---------------------------------------------------------------- the loss


@pytest.mark.parametrize("lam", [0.1, 0.5, 3.0])
def test_spin_loss_is_dpo_sigmoid_with_real_as_chosen(lam):
    x = _logps(7, seed=int(lam * 10))
    ours = spin_loss(*x, lam=lam)
    theirs = dpo_loss(*x, beta=lam, loss_type="sigmoid")
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert lossbook.spin_loss is spin_loss


def test_spin_loss_equals_trl_dpotrainer_sigmoid(trl):
    """TRL has no SPIN trainer; SPIN is DPO-sigmoid with real = chosen, generated = rejected: a real DPOTrainer's
    loss and reward metrics on its own batch equal spin_loss on the same four log-prob vectors."""
    from lossbook.demos.dpo import trl_conformance

    row = trl_conformance(("sigmoid",), beta=0.5, grads=False)[0]
    losses, r_real, r_gen = spin_loss(*row["inputs"]["logps"], lam=0.5)
    assert abs(losses.mean().item() - row["trl"]) < 1e-6
    assert abs(r_real.mean().item() - row["trl_rewards_chosen"]) < 1e-5
    assert abs(r_gen.mean().item() - row["trl_rewards_rejected"]) < 1e-5


def test_spin_loss_equals_sympy_values_and_gradients():
    hr, hg, lam = sp.symbols("h_r h_g lambda", real=True)
    expr = D.spin_loss(hr, hg, lam)
    f = sp.lambdify((hr, hg, lam), expr, "math")
    grads = [sp.lambdify((hr, hg, lam), sp.diff(expr, v), "math") for v in (hr, hg)]
    pr, pg, rr, rg = (t.clone().requires_grad_(True) for t in _logps(5, seed=3))
    losses = spin_loss(pr, pg, rr, rg, lam=0.7)[0]
    losses.sum().backward()
    for i in range(5):
        a, b = (pr - rr)[i].item(), (pg - rg)[i].item()
        assert abs(losses[i].item() - f(a, b, 0.7)) < 1e-12
        assert abs(pr.grad[i].item() - grads[0](a, b, 0.7)) < 1e-12
        assert abs(pg.grad[i].item() - grads[1](a, b, 0.7)) < 1e-12
        assert abs(rr.grad[i].item() + grads[0](a, b, 0.7)) < 1e-12  # d/d ref = -d/d policy


def test_spin_loss_gradcheck_and_extremes():
    x = [t.clone().requires_grad_(True) for t in _logps(4, seed=1)]
    assert torch.autograd.gradcheck(lambda *a: spin_loss(*a, lam=0.3)[0], x)
    big = [torch.tensor([0.0, 0.0]), torch.tensor([-5000.0, 5000.0]), torch.zeros(2), torch.zeros(2)]
    losses = spin_loss(*big, lam=1.0)[0]
    assert torch.isfinite(losses).all() and losses[0] == 0 and losses[1] == 5000.0


def test_spin_loss_errors():
    x = _logps(3)
    with pytest.raises(ValueError, match=r"policy_generated_logps has shape \[2\] but policy_real_logps has shape"):
        spin_loss(x[0], x[1][:2], x[2], x[3])
    with pytest.raises(ValueError, match=r"ref_real_logps must be \[batch\].*got shape \[3, 1\]"):
        spin_loss(x[0], x[1], x[2][:, None], x[3])
    with pytest.raises(TypeError, match="policy_real_logps must be a floating-point tensor"):
        spin_loss(x[0].long(), *x[1:])
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="lam must be a finite number > 0"):
            spin_loss(*x, lam=bad)
    with pytest.raises(TypeError, match="lam must be a real number"):
        spin_loss(*x, lam="0.1")


def test_bug_lam_on_one_term_fails_the_loss_check():
    from lossbook.checks import compare_losses

    def one_term(policy_real_logps, policy_generated_logps, ref_real_logps, ref_generated_logps, lam):
        h_r, h_g = policy_real_logps - ref_real_logps, policy_generated_logps - ref_generated_logps
        return -torch.nn.functional.logsigmoid(lam * h_r - h_g)

    cases = demo.spin_cases(seed=0)
    assert compare_losses(lambda **c: spin_loss(**c)[0], lambda **c: dpo_loss(
        c["policy_real_logps"], c["policy_generated_logps"], c["ref_real_logps"], c["ref_generated_logps"],
        beta=c["lam"])[0], cases).passed
    assert not compare_losses(one_term, lambda **c: spin_loss(**c)[0], cases, atol=1e-4).passed


# ---------------------------------------------------------------- derivations


def test_derivation_eq_4_7_from_the_two_player_view():
    k = 3
    p_free = list(sp.symbols(f"p0:{k - 1}", positive=True))
    p = [*p_free, 1 - sum(p_free)]
    p_t = list(sp.symbols(f"q0:{k}", positive=True))
    f = list(sp.symbols(f"f0:{k}", real=True))
    lam = sp.Symbol("lambda", positive=True)
    z = ddpo.partition(p_t, f, lam)
    # the opponent's objective is lam log Z - lam KL(p || p_{t+1}): maximised at p_{t+1} (Gibbs)
    gap = D.opponent_objective(p, p_t, f, lam) - ddpo.objective_gap(p, p_t, f, lam)
    assert sp.simplify(sp.expand(sp.expand_log(gap, force=True))) == 0
    nxt = D.opponent_update(p_t, f, lam)
    for i in range(k):
        assert sp.simplify(sp.expand_log(D.reward_of(nxt[i], p_t[i], lam, z), force=True) - f[i]) == 0
    # the main player's loss on f read back from the update is Eq. 4.7; Z cancels
    zs, a, b, qa, qb = sp.symbols("Z a b q_a q_b", positive=True)
    main = D.main_player_loss(D.reward_of(a, qa, lam, zs), D.reward_of(b, qb, lam, zs))
    eq47 = D.spin_loss(sp.log(a) - sp.log(qa), sp.log(b) - sp.log(qb), lam)
    assert sp.simplify(sp.expand_log(main - eq47, force=True)) == 0
    assert sp.simplify(sp.diff(sp.expand_log(main, force=True), zs)) == 0
    # lambda on one term only: Z no longer cancels (a wrong variant fails the same test)
    wrong = D.logistic(D.reward_of(a, qa, lam, zs) - D.reward_of(b, qb, lam, zs) / lam)
    assert sp.simplify(sp.diff(sp.expand_log(wrong, force=True), zs)) != 0


def test_derivation_fixed_point_is_the_data_distribution():
    k = 3
    theta = list(sp.symbols(f"theta0:{k}", real=True))
    theta_t = list(sp.symbols(f"t0:{k}", real=True))
    q_free = list(sp.symbols(f"d0:{k - 1}", positive=True))
    q = [*q_free, 1 - sum(q_free)]
    lam = sp.Symbol("lambda", positive=True)
    grad = D.expected_gradient(theta, theta_t, q, lam)
    closed = D.gradient_closed_form(theta_t, q, lam)
    assert all(sp.simplify(g - c) == 0 for g, c in zip(grad, closed))
    # zero at q = softmax(theta_t) (exact rationals: theta_t = log of a distribution) and not elsewhere
    p_star = [sp.Rational(1, 2), sp.Rational(1, 3), sp.Rational(1, 6)]
    at = {t: sp.log(v) for t, v in zip(theta_t, p_star)}
    at_data = {**at, q_free[0]: p_star[0], q_free[1]: p_star[1]}
    assert all(sp.simplify(g.subs(at_data)) == 0 for g in grad)
    off = {**at, q_free[0]: sp.Rational(1, 4), q_free[1]: sp.Rational(1, 2)}
    vals = [sp.nsimplify(sp.simplify(g.subs(off).subs(lam, 1))) for g in grad]
    assert vals == [sp.Rational(1, 8), sp.Rational(-1, 12), sp.Rational(-1, 24)]


# ---------------------------------------------------------------- generation and the EMA


def test_filters_equal_transformers_warpers(hf_loss_utils):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(6, 11, generator=g, dtype=torch.float64)
    for k in (1, 3, 11, 50):
        assert torch.equal(filter_logits(logits, top_k=k), TopKLogitsWarper(k)(None, logits))
    for p in (0.05, 0.5, 0.9, 1.0):
        assert torch.equal(filter_logits(logits, top_p=p), TopPLogitsWarper(p)(None, logits))
    both = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(4)(None, logits))
    assert torch.equal(filter_logits(logits, top_k=4, top_p=0.8), both)
    with pytest.raises(ValueError, match="top_p must be a number in"):
        filter_logits(logits, top_p=0.0)
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        filter_logits(logits, top_k=0)
    with pytest.raises(ValueError, match=r"logits must be \[batch, vocab\]"):
        filter_logits(logits[0])


def test_sampling_is_reproducible_filtered_and_greedy_is_generate():
    from lossbook.models import generate

    policy, _, batch = demo.tiny_spin_models(0, pad=False)
    prompts = batch["real"][:, :3]
    a = sample_completions(policy, prompts, 5, top_k=2, generator=torch.Generator().manual_seed(1))
    b = sample_completions(policy, prompts, 5, top_k=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (4, 8) and torch.equal(a[:, :3], prompts)
    greedy = sample_completions(policy, prompts, 5, temperature=0)
    for row in range(4):
        assert torch.equal(greedy[row], generate(policy, prompts[row], 5, temperature=0))
    k1 = sample_completions(policy, prompts, 5, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(k1, greedy)  # top-1 sampling is greedy


def test_ema_update():
    a, _, _ = demo.tiny_spin_models(0)
    b, _, _ = demo.tiny_spin_models(1)
    frozen = copy.deepcopy(a)
    ema_update_(frozen, b, 1.0)  # seed 002's default decay: never moves
    assert all(torch.equal(x, y) for x, y in zip(frozen.state_dict().values(), a.state_dict().values()))
    half = copy.deepcopy(a)
    ema_update_(half, b, 0.75)
    for (n, x), y, z in zip(half.state_dict().items(), a.state_dict().values(), b.state_dict().values()):
        assert torch.allclose(x, 0.75 * y + 0.25 * z, atol=1e-6), n
    copied = copy.deepcopy(a)
    ema_update_(copied, b, 0.0)
    assert all(torch.equal(x, y) for x, y in zip(copied.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="decay must lie in"):
        ema_update_(copied, b, 1.5)


# ---------------------------------------------------------------- the trainer


def _trainer(objective="spin", accum=1, batch_size=6, seed=0, **kw):
    policy, _, batch = demo.tiny_spin_models(seed, batch=8, pad=False)
    return SPINTrainer(policy, batch["real"], 3, valid_seqs=batch["real"][:3], objective=objective, lam=0.5,
                       batch_size=batch_size, grad_accum_steps=accum, steps_per_iteration=3, lr=1e-2, seed=seed,
                       progress=False, **kw)


def _grads_of_one_step(trainer, accum):
    """The step's accumulated gradient (the trainer's own loop), before the optimizer uses it."""
    trainer.policy.train()
    idx = torch.randint(0, trainer.train_seqs.shape[0], (trainer.batch_size,), generator=trainer.generator)
    denominator = trainer.denominator(trainer.batch_size)
    for micro in idx.tensor_split(accum):
        (trainer.batch_loss_sum(micro) / denominator).backward()
    return torch.cat([p.grad.flatten() for p in trainer.policy.parameters()])


@pytest.mark.parametrize("objective", ["spin", "sft"])
def test_accumulated_gradient_equals_full_batch(objective):
    full, parts = _trainer(objective), _trainer(objective, accum=4)  # micro-batches of 2, 2, 1, 1 pairs
    for t in (full, parts):
        t.begin_iteration()
    g_full, g_parts = _grads_of_one_step(full, 1), _grads_of_one_step(parts, 4)
    assert torch.allclose(g_full, g_parts, atol=1e-6, rtol=1e-5)
    # the mean of the micro-batches' means (their own denominators) is not the same gradient
    wrong = _trainer(objective, accum=4)
    wrong.begin_iteration()
    idx = torch.randint(0, 8, (6,), generator=wrong.generator)
    chunks = idx.tensor_split(4)
    for micro in chunks:
        (wrong.batch_loss_sum(micro) / wrong.denominator(len(micro)) / len(chunks)).backward()
    g_wrong = torch.cat([p.grad.flatten() for p in wrong.policy.parameters()])
    assert not torch.allclose(g_full, g_wrong, atol=1e-6, rtol=1e-5)
    # and the trainer's step accumulates the same way: the same loss (the sum of the micro-batches' shares)
    a, b = _trainer(objective), _trainer(objective, accum=4)
    for t in (a, b):
        t.begin_iteration()
    assert abs(a.step() - b.step()) < 1e-6


@pytest.mark.parametrize("ema", [None, 0.5])
def test_checkpoint_resumes_bit_for_bit(tmp_path, ema):
    straight = _trainer(ref_ema_decay=ema, checkpoint_every=4, checkpoint_dir=tmp_path, valid_every=2)
    straight.run(3)  # 9 steps; checkpoints after steps 4 and 8 (mid-iteration)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spin.ckpt.4.pt", "spin.ckpt.8.pt"]
    raw = torch.load(tmp_path / "spin.ckpt.4.pt", weights_only=True)  # tensors and numbers only
    assert raw["global_step"] == 4 and raw["iteration"] == 1 and raw["step_in_iteration"] == 1
    resumed = _trainer(ref_ema_decay=ema, valid_every=2)
    with torch.no_grad():  # other weights, another generator state: the checkpoint must replace them all
        for p in resumed.policy.parameters():
            p.add_(torch.randn_like(p))
    resumed.generator.manual_seed(123)
    resumed.load(tmp_path / "spin.ckpt.4.pt")
    resumed.run(3)
    for x, y in zip(straight.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.equal(x, y)
    for x, y in zip(straight.reference.state_dict().values(), resumed.reference.state_dict().values()):
        assert torch.equal(x, y)
    assert straight.history.records == resumed.history.records
    # the next step after a round trip is the same step, bit for bit
    one = _trainer(ref_ema_decay=ema)
    one.begin_iteration()
    one.step()
    path = one.save(tmp_path / "one.pt")
    two = _trainer(ref_ema_decay=ema)
    two.generator.manual_seed(7)
    two.load(path)
    assert one.step() == two.step()
    for x, y in zip(one.policy.parameters(), two.policy.parameters()):
        assert torch.equal(x, y)


def test_reference_refresh_ema_and_frozen():
    t = _trainer()
    t.begin_iteration()
    start = copy.deepcopy(t.reference.state_dict())
    t.step()
    assert all(torch.equal(start[k], v) for k, v in t.reference.state_dict().items())  # frozen in the iteration
    e = _trainer(ref_ema_decay=0.5)
    e.begin_iteration()
    e.step()
    assert not all(torch.equal(start[k], v) for k, v in e.reference.state_dict().items())
    one = _trainer(ref_ema_decay=1.0)  # seed 002's default: the EMA never moves, the same as frozen
    one.run(2)
    frozen = _trainer()
    frozen.run(2)
    for x, y in zip(one.policy.parameters(), frozen.policy.parameters()):
        assert torch.equal(x, y)
    assert demo.check_refresh() == 0
    assert demo.check_refresh(zoo.NeverRefreshedTrainer) > 0


def test_validation_schedule_and_history():
    t = _trainer(valid_every=2)
    t.run(2)  # 6 steps: validated at 2, 4, 6, and each iteration's end (3)
    assert [s for s, _ in t.history["valid_nll"]] == [2, 3, 4, 6]
    assert [s for s, _ in t.history["valid_spin_loss"]] == [2, 3, 4, 6]
    ok, _ = demo.check_schedule(lambda step, every: step % every == 0)
    bad, wrong = demo.check_schedule(zoo.seed_should_validate)
    assert ok and not bad and wrong
    assert demo.seed_valid_fires(100, 300) == [1, 2, 4, 5, 10, 20, 25, 50, 100]
    assert demo.fixed_valid_fires(100, 300) == [100, 200, 300]


def test_trainer_errors():
    policy, _, batch = demo.tiny_spin_models(0, pad=False)
    with pytest.raises(ValueError, match=r"prompt_len must be an int in \[1, 9\]"):
        SPINTrainer(policy, batch["real"], 10)
    with pytest.raises(TypeError, match="train_seqs must hold integer token ids"):
        SPINTrainer(policy, batch["real"].float(), 3)
    with pytest.raises(ValueError, match="objective must be 'spin' or 'sft'"):
        SPINTrainer(policy, batch["real"], 3, objective="dpo")
    with pytest.raises(ValueError, match="grad_accum_steps"):
        SPINTrainer(policy, batch["real"], 3, batch_size=2, grad_accum_steps=3)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        SPINTrainer(policy, batch["real"], 3, checkpoint_every=2)
    t = SPINTrainer(policy, batch["real"], 3, progress=False)
    with pytest.raises(RuntimeError, match="call begin_iteration"):
        t.step()


def test_sft_objective_is_the_token_mean_nll():
    t = _trainer("sft", batch_size=8)
    t.begin_iteration()
    idx = torch.arange(8)
    seqs = t.train_seqs
    mask = torch.zeros_like(seqs)
    mask[:, 3:] = 1
    want = -sequence_logps(t.policy(seqs), seqs, mask).sum() / mask[:, 1:].sum()
    got = t.batch_loss_sum(idx) / t.denominator(8)
    assert torch.allclose(got, want)
    assert torch.allclose(got, lossbook.causal_lm_loss(t.policy(seqs), seqs.masked_fill(mask == 0, -100)))


# ---------------------------------------------------------------- seed 002 and the bug zoo


def test_seed_forward_fixed_equals_lossbook_and_as_written_differs():
    for seed in range(3):
        policy, reference, batch = demo.tiny_spin_models(seed)
        ours = demo.lossbook_spin_forward(policy, reference, batch, 0.1)
        gen, real = batch["generated"].clone(), batch["real"].clone()
        fixed = demo.seed_spin_forward(policy, reference, gen, real, batch["prompt_len"], lam=0.1, pad_id=-1,
                                       fix=True)
        assert torch.equal(gen, batch["generated"])  # the fixed one leaves the batch alone
        assert abs(fixed.item() - ours.item()) < 1e-6
        as_written = demo.seed_spin_forward(policy, reference, gen, real, batch["prompt_len"], lam=0.1, pad_id=-1)
        assert abs(as_written.item() - ours.item()) > 1e-4
        assert (gen == -1).sum() == 0 and (batch["generated"] == -1).sum() > 0  # the caller's pads are gone


def test_bug_zoo_each_fails_the_check_lossbook_passes():
    assert demo.check_spin_step(lambda p, r, b, lam: demo.lossbook_spin_forward(p, r, b, lam)).passed
    for bug in (zoo.unshifted_gather, zoo.mutates_the_batch, zoo.lam_on_one_term):
        assert not demo.check_spin_step(bug).passed, bug.__name__


def test_widget_shows_lossbook_numbers():
    from lossbook.widgets.spin import SpinExplorer

    ex = SpinExplorer()
    ex.iteration.value = 1
    ex.lam.value = 0.5
    row = ex.current
    losses = spin_loss(row["policy_real"], row["policy_generated"], row["ref_real"], row["ref_generated"], lam=0.5)[0]
    assert abs(ex.loss - losses.mean().item()) < 1e-9
    assert "lossbook-loss" in ex.html.value and f"{ex.loss:.4f}" in ex.html.value


def test_a_demo_arm_runs_the_trainer_class_it_is_given():
    """``run_arm(trainer_cls=...)`` trains with that class (chapter 10 trains the never-refreshed bug as an arm):
    the bug's arm equals Algorithm 1's in iteration 1 (both references are the start model) and differs after."""
    from lossbook.bugzoo.spin import NeverRefreshedTrainer
    from lossbook.demos import spin as demo

    data = demo.make_spin_data(n_train=16, n_valid=8, prompt_len=4, completion_len=6, seed=0)
    weak = demo.pretrain(data, steps=3, seed=0, progress=False)
    used = []

    class Spy(NeverRefreshedTrainer):
        def begin_iteration(self):
            used.append(type(self).__name__)
            super().begin_iteration()

    kw = dict(iterations=2, steps_per_iteration=2, lam=1.0, lr=5e-3, batch_size=8, samples=16, progress=False)
    _, fix = demo.run_arm(weak, data, **kw)
    _, bug = demo.run_arm(weak, data, trainer_cls=Spy, **kw)
    assert used == ["Spy", "Spy"]
    assert fix[1]["nll"] == bug[1]["nll"] and fix[2]["nll"] != bug[2]["nll"]
