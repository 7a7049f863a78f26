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
    # float32 means summed in another order: a few ulp apart (1.7e-6 of 2.2 with ATEN_CPU_CAPABILITY=default)
    assert abs(losses.mean().item() - row["trl"]) <= 2e-6 * abs(row["trl"])
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


# ---------------------------------------------------------------- padding, dropout, early errors (issue 23)


def _padded_rows(seed=0, vocab=9, seq=10):
    """8 rows right-padded with -1 (seed 002's pad_id), prompts of 2 to 4 tokens, completions of >= 1 token."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, vocab, (8, seq), generator=g)
    prompt_len = torch.tensor([2, 3, 2, 4, 3, 2, 4, 3])
    ends = torch.tensor([7, 10, 5, 8, 10, 3, 6, 9])  # pads from here on
    rows = rows.masked_fill(torch.arange(seq) >= ends[:, None], -1)
    return rows, prompt_len, ends


def _unpadded_logp(model, row, start, end):
    """Summed log-probs of tokens start..end-1 of ``row``, from a forward of the row cut at ``end``: no pad is
    ever in the model's input, none can be scored (independent of the trainer's masks)."""
    logits = model(row[None, :end])[0].double().log_softmax(-1)  # [end, vocab]
    return sum(logits[t - 1, row[t]] for t in range(start, end))


def test_trainer_scores_no_pad_and_takes_one_prompt_length_per_row():
    """Seed 002 takes ``pad_id`` and ``prompt_len`` per row; before, the pads of right-padded rows were scored."""
    policy, reference, _ = demo.tiny_spin_models(0, pad=False)
    rows, prompt_len, ends = _padded_rows()
    t = SPINTrainer(policy, rows, prompt_len, pad_id=-1, valid_seqs=rows[:4], valid_prompt_len=prompt_len[:4],
                    temperature=0.0, batch_size=4, progress=False)
    t.reference.load_state_dict(reference.state_dict())  # a reference that differs from the policy
    pos = torch.arange(10)
    want_mask = (pos >= prompt_len[:, None]) & (pos < ends[:, None])
    assert torch.equal(t.train_mask.bool(), want_mask) and torch.equal(t.valid_mask.bool(), want_mask[:4])
    t.generated = t.generate(t.train_seqs, t.train_mask)
    for i in range(8):  # greedy: each row's completion is the reference's continuation of its own prompt
        p, e = int(prompt_len[i]), int(ends[i])
        alone = sample_completions(t.reference, rows[i : i + 1, :p], e - p, temperature=0.0)[0]
        assert torch.equal(t.generated[i, :e], alone) and not t.generated[i, e:].any()
    idx = torch.arange(8)
    with torch.no_grad():
        got = t.pair_losses(t.train_seqs[idx], t.generated[idx], t.train_mask[idx])
    want = []
    for i in range(8):
        p, e = int(prompt_len[i]), int(ends[i])
        real, gen = rows[i], t.generated[i]
        with torch.no_grad():
            h_real = _unpadded_logp(policy, real, p, e) - _unpadded_logp(reference, real, p, e)
            h_gen = _unpadded_logp(policy, gen, p, e) - _unpadded_logp(reference, gen, p, e)
        want.append(-torch.nn.functional.logsigmoid(0.1 * (h_real - h_gen)))
    torch.testing.assert_close(got.double(), torch.stack(want), rtol=1e-5, atol=1e-6)


def test_sft_with_pads_divides_by_the_scored_tokens_as_transformers(hf_loss_utils):
    policy, _, _ = demo.tiny_spin_models(1, pad=False)
    rows, prompt_len, ends = _padded_rows(1)
    t = SPINTrainer(policy, rows, prompt_len, pad_id=-1, objective="sft", valid_seqs=rows,
                    valid_prompt_len=prompt_len, progress=False)
    idx = torch.tensor([0, 3, 5, 6])
    got = t.batch_loss_sum(idx) / t.denominator(idx)
    pos = torch.arange(10)
    labels = rows[idx].masked_fill((pos < prompt_len[idx, None]) | (pos >= ends[idx, None]), -100)
    inputs = rows[idx].clamp(min=0)  # what the pads read as does not matter to a causal LM's scored positions
    logits = policy(inputs)
    want = hf_loss_utils.ForCausalLMLoss(logits, labels, vocab_size=logits.shape[-1])
    torch.testing.assert_close(got, want)
    n_scored = int((labels[:, 1:] != -100).sum())
    assert t.denominator(idx) == n_scored
    with pytest.raises(ValueError, match=r"denominator\(n\) needs one completion length"):
        t.denominator(4)
    t.begin_iteration()
    full = hf_loss_utils.ForCausalLMLoss(
        policy.eval()(rows.clamp(min=0)), rows.masked_fill((pos < prompt_len[:, None]) | (pos >= ends[:, None]),
                                                          -100), vocab_size=9)
    assert abs(t.validate()["valid_nll"] - full.item()) < 1e-6


def test_padding_and_prompt_errors_name_the_argument():
    policy, _, _ = demo.tiny_spin_models(0, pad=False)
    rows, prompt_len, _ = _padded_rows()
    with pytest.raises(ValueError, match=r"train_seqs holds token id -1 at \[0, 7\] of \[8, 10\].*pass it as pad_id"):
        SPINTrainer(policy, rows, prompt_len)
    left = rows.clone()
    left[1, 0] = -1
    with pytest.raises(ValueError, match=r"train_seqs must be right-padded with pad_id=-1 .*row 1 of \[8, 10\]"):
        SPINTrainer(policy, left, prompt_len, pad_id=-1)
    with pytest.raises(ValueError, match=r"train_seqs row 5 has 3 tokens before its pads and a prompt of 4"):
        SPINTrainer(policy, rows, 4, pad_id=-1)
    with pytest.raises(ValueError, match=r"prompt_len must lie in \[1, 9\] .*got 10 at row 7"):
        SPINTrainer(policy, rows, torch.tensor([2] * 7 + [10]), pad_id=-1)
    with pytest.raises(ValueError, match=r"prompt_len per row must be \[8\] .*got \[3\]"):
        SPINTrainer(policy, rows, prompt_len[:3], pad_id=-1)
    with pytest.raises(ValueError, match="valid_seqs needs valid_prompt_len when prompt_len is given per row"):
        SPINTrainer(policy, rows, prompt_len, pad_id=-1, valid_seqs=rows)
    with pytest.raises(TypeError, match="pad_id must be an int or None, got 1.5"):
        SPINTrainer(policy, rows, prompt_len, pad_id=1.5)


def test_out_of_vocabulary_and_too_long_rows_are_named_at_construction():
    """Before: a bare ``IndexError: index out of range in self`` from the embedding, at the first step."""
    policy, _, batch = demo.tiny_spin_models(0, pad=False)  # vocab 9, max_len 10
    bad = batch["real"].clone()
    bad[2, 5] = 9
    with pytest.raises(ValueError, match=r"train_seqs holds token id 9 at \[2, 5\] of \[4, 10\], outside the "
                                         r"policy's vocabulary \[0, 9\)"):
        SPINTrainer(policy, bad, 3)
    with pytest.raises(ValueError, match=r"valid_seqs holds token id 9 at \[2, 5\]"):
        SPINTrainer(policy, batch["real"], 3, valid_seqs=bad)
    with pytest.raises(ValueError, match=r"train_seqs has rows of 12 tokens .*max_len 10"):
        SPINTrainer(policy, torch.zeros(2, 12, dtype=torch.long), 3)


@pytest.mark.parametrize("kw, message", [
    ({"lam": float("inf")}, "lam must be a finite number > 0, got inf"),
    ({"lam": float("nan")}, "lam must be a finite number > 0, got nan"),
    ({"temperature": -1.0}, r"temperature must be a finite number >= 0 \(0: greedy\), got -1.0"),
    ({"temperature": float("inf")}, "temperature must be a finite number >= 0"),
    ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\] or None, got 0.0"),
    ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
    ({"top_k": 0}, "top_k must be an int >= 1 or None, got 0"),
    ({"dropout": 1.0}, r"dropout must lie in \[0, 1\) or be None"),
])
def test_bad_settings_are_refused_at_construction(kw, message):
    """Before, these were accepted and failed at the first begin_iteration() or step()."""
    policy, _, batch = demo.tiny_spin_models(0, pad=False)
    with pytest.raises(ValueError, match=message):
        SPINTrainer(policy, batch["real"], 3, progress=False, **kw)


def test_dropout_is_off_as_in_trl_and_seed_002(trl):
    """At policy = reference the SPIN loss is log 2 for every pair; with dropout on (kept by ``dropout=None``)
    the training-mode policy is not the eval-mode reference, and it is not."""
    from trl.trainer.utils import disable_dropout_in_model

    from lossbook.models import TinyTransformer

    _, _, batch = demo.tiny_spin_models(0, batch=8, pad=False)
    torch.manual_seed(0)
    model = TinyTransformer(9, d_model=16, n_heads=2, n_layers=1, max_len=10, dropout=0.3)
    upstream = copy.deepcopy(model)
    disable_dropout_in_model(upstream)  # what TRL's DPOTrainer does with disable_dropout=True (its default)
    kept = SPINTrainer(copy.deepcopy(model), batch["real"], 3, dropout=None, batch_size=8, progress=False)
    t = SPINTrainer(model, batch["real"], 3, batch_size=8, progress=False)
    drops = [(n, m.p) for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and drops == [(n, m.p) for n, m in upstream.named_modules() if isinstance(m, torch.nn.Dropout)]
    for trainer in (t, kept):
        trainer.begin_iteration()
    assert abs(t.step() - torch.log(torch.tensor(2.0)).item()) < 1e-6  # the first step's loss: policy = p_t
    losses = kept.pair_losses(kept.train_seqs, kept.generated, kept.train_mask)
    assert (losses - torch.log(torch.tensor(2.0))).abs().max() > 1e-3
