"""Chapter 09: sequence_logps and dpo_loss against TRL 1.16's DPOTrainer, sympy, autograd and hand-made paths."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
import torch.nn.functional as F

import lossbook
from lossbook import dpo_loss, sequence_logps
from lossbook.derivations import dpo as D
from lossbook.dpo import LOSS_FUNCTIONS, LOSS_TYPES, TRL_LOSS_TYPES, VARIANT_KEYWORDS

SORTING = ("aot", "aot_unpaired")
PAIRWISE = [t for t in LOSS_TYPES if t not in (*SORTING, "sft")]
SMOOTHING = {"exo_pair": 0.1, "robust": 0.1, "aot": 0.1, "aot_unpaired": 0.1, "cdpo": 0.1}


def _kwargs(loss_type, batch, dtype=torch.float64, g=None):
    """The variant keywords a loss type needs, with lengths drawn at random."""
    g = g or torch.Generator().manual_seed(5)
    kw = {}
    if loss_type in ("ipo", "sigmoid_norm", "sft"):
        key = "chosen_scored_tokens" if loss_type == "sft" else "chosen_lengths"
        kw[key] = torch.randint(1, 9, (batch,), generator=g).to(dtype)
    if loss_type in ("ipo", "sigmoid_norm"):
        kw["rejected_lengths"] = torch.randint(1, 9, (batch,), generator=g).to(dtype)
    if loss_type == "discopop":
        kw["discopop_tau"] = 0.3
    return kw


def _logps(batch=6, seed=0, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(batch, generator=g) - 10).to(dtype) for _ in range(4)]


# ---------------------------------------------------------------- TRL conformance: a real DPOTrainer per type


@pytest.fixture(scope="module")
def conformance(trl):
    from lossbook.demos.dpo import trl_conformance

    return {row["loss_type"]: row for row in trl_conformance()}


def test_trl_has_exactly_these_loss_types(trl):
    import inspect

    from trl.trainer import dpo_trainer

    src = inspect.getsource(dpo_trainer.DPOTrainer._compute_loss)
    found = [line.split('"')[1] for line in src.splitlines() if "if loss_type == " in line]
    assert tuple(found) == TRL_LOSS_TYPES


@pytest.mark.parametrize("loss_type", TRL_LOSS_TYPES)
def test_dpo_loss_equals_trl_dpotrainer(conformance, loss_type):
    row = conformance[loss_type]
    scale = max(1.0, abs(row["trl"]))
    assert row["diff"] <= 1e-5 * scale, row
    assert row["grad_diff"] <= 1e-5 * scale, row
    assert abs(row["trl_rewards_chosen"] - row["lossbook_rewards_chosen"]) <= 1e-5
    assert abs(row["trl_rewards_rejected"] - row["lossbook_rewards_rejected"]) <= 1e-5
    assert row["trl"] != 0 and math.isfinite(row["trl"])


def _conformance_inputs():
    """Log-probs of the conformance batch from plain forwards (as trl_conformance computes them)."""
    from lossbook.demos import dpo as demo

    tok = demo.char_tokenizer()
    ds = demo.conformance_dataset()
    eos = tok.eos_token
    rows = []
    for ex in ds:
        p = tok(ex["prompt"])["input_ids"] if ex["prompt"] else []
        rows.append((p, tok(ex["chosen"] + eos)["input_ids"], tok(ex["rejected"] + eos)["input_ids"]))
    seqs = [p + c for p, c, _ in rows] + [p + r for p, _, r in rows]
    masks = [[0] * len(p) + [1] * len(c) for p, c, _ in rows] + [[0] * len(p) + [1] * len(r) for p, _, r in rows]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        pol = sequence_logps(demo.tiny_llama(1)(input_ids=ids, attention_mask=attn).logits, ids, mask=mask)
        ref = sequence_logps(demo.tiny_llama(2)(input_ids=ids, attention_mask=attn).logits, ids, mask=mask)
    return pol.chunk(2), ref.chunk(2), mask


def test_conformance_data_tells_the_conventions_apart(conformance):
    """The TRL comparison can fail: the wrong IPO length count, cDPO for sigmoid, unsorted aot all miss TRL."""
    (pw, pl), (rw, rl), mask = _conformance_inputs()
    cm, rm = mask.chunk(2)
    beta = 0.5
    # the lossbook inputs reproduce the harness
    got = dpo_loss(pw, pl, rw, rl, beta=beta, loss_type="ipo", chosen_lengths=cm.sum(-1),
                   rejected_lengths=rm.sum(-1))[0].mean()
    assert abs(float(got) - conformance["ipo"]["trl"]) <= 1e-5 * abs(conformance["ipo"]["trl"])
    # IPO with the scored (shifted) count instead of TRL's unshifted count: the empty prompt makes them differ
    wrong = dpo_loss(pw, pl, rw, rl, beta=beta, loss_type="ipo", chosen_lengths=cm[:, 1:].sum(-1),
                     rejected_lengths=rm[:, 1:].sum(-1))[0].mean()
    assert abs(float(wrong) - conformance["ipo"]["trl"]) > 1e-3
    # aot without the sort is not TRL's aot
    unsorted = lossbook.dpo_loss(pw, pl, rw, rl, beta=beta, loss_type="cdpo", label_smoothing=0.1)[0].mean()
    assert abs(float(unsorted) - conformance["aot"]["trl"]) > 1e-3
    # the reference differs from the policy (else every reward would be 0)
    assert (pw - rw).abs().min() > 0.1


def test_sft_divides_by_the_scored_count_under_its_own_keyword(conformance):
    """TRL's sft divides by shift_completion_mask, ipo by completion_mask: one keyword per count."""
    (pw, pl), (rw, rl), mask = _conformance_inputs()
    cm = mask.chunk(2)[0]  # [pairs, seq] the chosen completion masks (unshifted)
    want = conformance["sft"]["trl"]
    got = dpo_loss(pw, pl, rw, rl, beta=0.5, loss_type="sft", chosen_scored_tokens=cm[:, 1:].sum(-1))[0]
    assert abs(float(got.mean()) - want) <= 1e-5 * abs(want)
    # the unshifted (ipo) count misses TRL's sft on this batch (it has an empty prompt)
    wrong = dpo_loss(pw, pl, rw, rl, beta=0.5, loss_type="sft", chosen_scored_tokens=cm.sum(-1))[0]
    assert abs(float(wrong.mean()) - want) > 1e-2
    with pytest.raises(TypeError, match=r"'sft' does not use \['chosen_lengths'\].*"
                                        r"chosen_scored_tokens=mask\[:, 1:\]\.sum\(-1\)"):
        dpo_loss(pw, pl, rw, rl, beta=0.5, loss_type="sft", chosen_lengths=cm.sum(-1))
    with pytest.raises(TypeError, match=r"'ipo' does not use \['chosen_scored_tokens'\]"):
        dpo_loss(pw, pl, rw, rl, beta=0.5, loss_type="ipo", chosen_lengths=cm.sum(-1),
                 rejected_lengths=cm.sum(-1), chosen_scored_tokens=cm.sum(-1))
    with pytest.raises(TypeError, match=r"'sft' needs \['chosen_scored_tokens'\]"):
        dpo_loss(pw, pl, rw, rl, beta=0.5, loss_type="sft")


@pytest.mark.parametrize("loss_type", ["ipo", "sigmoid_norm", "sft"])
def test_lengths_must_be_whole_counts(loss_type):
    x = _logps(batch=3)
    key = "chosen_scored_tokens" if loss_type == "sft" else "chosen_lengths"

    def call(n):
        other = {} if loss_type == "sft" else {"rejected_lengths": torch.tensor([2, 2, 2])}
        return dpo_loss(*x, loss_type=loss_type, **{key: n}, **other)[0]

    torch.testing.assert_close(call(torch.tensor([3, 1, 2])), call(torch.tensor([3.0, 1.0, 2.0])))
    with pytest.raises(TypeError, match=rf"{key} must hold token counts .*got dtype torch.bool: a mask"):
        call(torch.tensor([True, False, True]))
    for bad in ([1.5, 1.0, 2.0], [1.0, float("inf"), 2.0], [1.0, float("nan"), 2.0]):
        with pytest.raises(ValueError, match=rf"{key} must hold whole token counts, got \[1"):
            call(torch.tensor(bad))


def test_reference_logps_computed_with_autograd_are_refused():
    from lossbook.demos import dpo as demo

    policy, reference, batch = demo.tiny_pair_models(seed=0)
    pw, pl = demo.pair_logps(policy, batch)
    rw, rl = demo.pair_logps(reference, batch)  # autograd on: rw, rl have a grad_fn
    with pytest.raises(ValueError, match=r"ref_chosen_logps was computed with autograd on \(grad_fn=\w+\).*"
                                         r"torch\.no_grad\(\)"):
        dpo_loss(pw, pl, rw, rl)
    with pytest.raises(ValueError, match=r"ref_rejected_logps was computed with autograd on"):
        dpo_loss(pw, pl, rw.detach(), rl)
    detached = dpo_loss(pw, pl, rw.detach(), rl.detach())[0]
    with torch.no_grad():
        frozen = demo.pair_logps(reference, batch)
    torch.testing.assert_close(detached, dpo_loss(pw, pl, *frozen)[0])
    # a leaf that requires grad is a deliberate variable (gradcheck, the sympy comparison): accepted
    leaves = [t.detach().double().requires_grad_() for t in (pw, pl, rw, rl)]
    dpo_loss(*leaves)[0].sum().backward()
    assert leaves[2].grad is not None


@pytest.mark.parametrize("beta", [float("inf"), float("-inf"), float("nan"), torch.tensor(float("inf"))])
def test_beta_must_be_finite(beta):
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got (inf|-inf|nan)"):
        dpo_loss(*_logps(batch=3), beta=beta)


def test_sequence_logps_never_reads_an_unscored_label():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 7, generator=g)  # [batch, seq, vocab]
    labels = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    base = sequence_logps(z, labels, mask)
    for value in (7, 99, -5, -100):  # out of the vocabulary, at positions the mask leaves out
        odd = labels.clone()
        odd[0, 1] = odd[0, 4] = value
        torch.testing.assert_close(sequence_logps(z, odd, mask), base)
        torch.testing.assert_close(sequence_logps(z, odd, mask, average=True),
                                   sequence_logps(z, labels, mask, average=True))
    for value in (7, -5):  # at a scored position: a clear error
        odd = labels.clone()
        odd[1, 3] = value
        with pytest.raises(ValueError, match=rf"token id {value} at a scored position, outside \[0, 7\)"):
            sequence_logps(z, odd, mask)


def test_trl_sigmoid_ignores_label_smoothing_and_lossbook_refuses(trl):
    """TRL 1.16: sigmoid with label_smoothing=0.3 gives the plain DPO loss (older TRL applied cDPO)."""
    import copy

    from trl import DPOConfig, DPOTrainer

    from lossbook.demos import dpo as demo

    losses = []
    for smoothing in (0.0, 0.3):
        args = DPOConfig(output_dir="/tmp/lossbook-dpo-ls", report_to=[], bf16=False, use_cpu=True,
                         loss_type=["sigmoid"], beta=0.5, label_smoothing=smoothing, per_device_train_batch_size=6,
                         save_strategy="no", logging_strategy="no")
        tr = DPOTrainer(model=copy.deepcopy(demo.tiny_llama(1)), ref_model=copy.deepcopy(demo.tiny_llama(2)),
                        args=args, train_dataset=demo.conformance_dataset(), processing_class=demo.char_tokenizer())
        batch = tr.data_collator([tr.train_dataset[i] for i in range(6)])
        with torch.no_grad():
            losses.append(float(tr.compute_loss(tr.model, batch)))
    assert losses[0] == losses[1]
    (pw, pl), (rw, rl), _ = _conformance_inputs()
    cdpo = float(dpo_loss(pw, pl, rw, rl, beta=0.5, loss_type="cdpo", label_smoothing=0.3)[0].mean())
    assert abs(cdpo - losses[1]) > 1e-3  # what older TRL computed is not what 1.16 computes
    with pytest.raises(ValueError, match="TRL 1.16 silently ignores it"):
        dpo_loss(pw, pl, rw, rl, beta=0.5, loss_type="sigmoid", label_smoothing=0.3)


def test_sequence_logps_equals_trl_fused_head(trl):
    """TRL's fused LM head (no full logits) against sequence_logps on the full logits, prompt mask and padding."""
    import copy

    from trl.trainer.utils import add_fused_lm_head

    from lossbook.demos import dpo as demo

    model = demo.tiny_llama(3)
    fused = copy.deepcopy(model)
    add_fused_lm_head(fused)
    ids = torch.tensor([[3, 4, 5, 6, 1, 0, 0], [7, 8, 9, 10, 11, 12, 1], [5, 5, 1, 0, 0, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]])
    attn = (torch.arange(7)[None] < torch.tensor([[5], [7], [3]])).long()
    with torch.no_grad():
        theirs = fused(input_ids=ids, attention_mask=attn, labels=ids.masked_fill(mask == 0, -100),
                       fused_lm_head=True).log_probs.sum(-1)
        mine = sequence_logps(model(input_ids=ids, attention_mask=attn).logits, ids, mask=mask)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- sequence_logps


def _loop_logps(logits, labels, mask, average=False):
    """Position by position, in float64: the definition."""
    out = []
    for b in range(labels.shape[0]):
        total, n = 0.0, 0
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100 or (mask is not None and not bool(mask[b, t + 1])):
                continue
            lp = logits[b, t].double() - torch.logsumexp(logits[b, t].double(), -1)
            total, n = total + float(lp[y]), n + 1
        out.append(total / max(n, 1) if average else total)
    return torch.tensor(out, dtype=torch.float64)


def _padded_case(seed=0, batch=4, seq=9, vocab=7):
    g = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64)
    labels = torch.randint(1, vocab, (batch, seq), generator=g)
    prompt = torch.tensor([3, 0, 5, 2])[:batch]
    length = torch.tensor([9, 4, 7, 3])[:batch]
    pos = torch.arange(seq)[None]
    mask = (pos >= prompt[:, None]) & (pos < length[:, None])  # completion: after the prompt, before padding
    labels = labels.masked_fill(pos >= length[:, None], -100)  # padding is -100 too
    return logits, labels, mask


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_matches_position_loop(average):
    logits, labels, mask = _padded_case()
    torch.testing.assert_close(sequence_logps(logits, labels, mask, average=average),
                               _loop_logps(logits, labels, mask, average))
    torch.testing.assert_close(sequence_logps(logits, labels, average=average),
                               _loop_logps(logits, labels, None, average))


def test_sequence_logps_mask_and_ignore_index_agree():
    """Marking the prompt with mask=0 or with labels=-100 gives the same log-probs; padding logits are unused."""
    logits, labels, mask = _padded_case(1)
    as_labels = labels.masked_fill(~mask, -100)
    torch.testing.assert_close(sequence_logps(logits, labels, mask), sequence_logps(logits, as_labels))
    leaf = logits.clone().requires_grad_(True)
    sequence_logps(leaf, labels, mask).sum().backward()
    pos = torch.arange(labels.shape[1])
    for b in range(labels.shape[0]):
        scored = mask[b, 1:].nonzero().flatten()  # the logit rows that predict scored tokens
        unused = [t for t in pos.tolist() if t not in scored.tolist()]
        assert leaf.grad[b, unused].abs().max() == 0


def test_sequence_logps_equals_causal_lm_loss_times_count():
    """The sum of next-token log-probs is -(causal LM loss) x (number of kept targets), row by row."""
    logits, labels, mask = _padded_case(2)
    labels = labels.masked_fill(~mask, -100)
    for b in range(labels.shape[0]):
        n = int((labels[b, 1:] != -100).sum())
        expected = -lossbook.causal_lm_loss(logits[b : b + 1], labels[b : b + 1]) * n
        torch.testing.assert_close(sequence_logps(logits[b : b + 1], labels[b : b + 1])[0], expected)


def test_sequence_logps_gradcheck_and_edge_cases():
    logits, labels, mask = _padded_case(3, batch=3, seq=5, vocab=4)
    leaf = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: sequence_logps(z, labels, mask, average=True), (leaf,))
    # seq length 1: nothing is scored
    assert sequence_logps(torch.randn(2, 1, 5), torch.tensor([[1], [2]])).tolist() == [0.0, 0.0]
    # a completion of one token, batch 1
    z = torch.randn(1, 3, 5, dtype=torch.float64)
    y = torch.tensor([[4, 2, 3]])
    m = torch.tensor([[0, 0, 1]])
    torch.testing.assert_close(sequence_logps(z, y, m), z[0, 1].log_softmax(-1)[3].view(1))
    torch.testing.assert_close(sequence_logps(z, y, m, average=True), z[0, 1].log_softmax(-1)[3].view(1))
    # a row with no scored token: sum 0, mean 0 (count clamped at 1)
    m0 = torch.zeros_like(m)
    assert sequence_logps(z, y, m0, average=True).item() == 0.0
    # extreme logits stay finite; half precision is computed in float32
    big = torch.tensor([[[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]]])
    assert torch.isfinite(sequence_logps(big, torch.tensor([[0, 0]]))).all()
    assert sequence_logps(big.half(), torch.tensor([[0, 1]])).dtype == torch.float32


def test_sequence_logps_errors():
    z = torch.randn(2, 5, 7)
    with pytest.raises(ValueError, match=r"labels must have shape \[2, 5\].*got \[2, 4\]"):
        sequence_logps(z, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask must have the labels' shape \[2, 5\].*got \[2, 4\]"):
        sequence_logps(z, torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 4))
    for bad in (torch.full((2, 5), 2), torch.full((2, 5), 0.5)):  # integer or float, a mask holds 0/1 only
        with pytest.raises(ValueError, match=r"mask must hold only 0 and 1.*\[2, 5\]"):
            sequence_logps(z, torch.zeros(2, 5, dtype=torch.long), bad)
    with pytest.raises(ValueError, match=r"logits must be \[batch, seq, vocab\], got shape \[5, 7\]"):
        sequence_logps(z[0], torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must hold integer"):
        sequence_logps(z, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"token id 7 at a scored position, outside \[0, 7\)"):
        sequence_logps(z, torch.full((2, 5), 7))
    # an out-of-range id where nothing is scored is allowed (e.g. a prompt token of another vocabulary)
    labels = torch.full((2, 5), 3)
    labels[:, 0] = 99
    sequence_logps(z, labels)


def test_sequence_logps_plus_sigmoid_is_fixed_xtransformers():
    """Seed 001 with its gather fixed = sequence_logps(average=True) + dpo_loss(sigmoid); unfixed it is not."""
    from lossbook.demos.dpo import tiny_pair_models, xtransformers_dpo

    policy, reference, batch = tiny_pair_models(seed=0)
    ids_w, ids_l, prompt_mask = batch["chosen_ids"], batch["rejected_ids"], batch["prompt_mask"]
    with torch.no_grad():
        fixed = xtransformers_dpo(policy, reference, ids_w, ids_l, prompt_mask, beta=0.1, pad_id=0, fix=True)
        seed = xtransformers_dpo(policy, reference, ids_w, ids_l, prompt_mask, beta=0.1, pad_id=0, fix=False)
        mask_w = ~prompt_mask & (ids_w != 0)
        mask_l = ~prompt_mask & (ids_l != 0)
        pw = sequence_logps(policy(ids_w), ids_w, mask_w, average=True)
        pl = sequence_logps(policy(ids_l), ids_l, mask_l, average=True)
        rw = sequence_logps(reference(ids_w), ids_w, mask_w, average=True)
        rl = sequence_logps(reference(ids_l), ids_l, mask_l, average=True)
        ours = dpo_loss(pw, pl, rw, rl, beta=0.1)[0].mean()
    torch.testing.assert_close(fixed, ours)
    assert abs(float(seed) - float(ours)) > 1e-4


def test_concatenated_forward_and_precomputed_reference():
    from lossbook.demos.dpo import dpo_batch_loss, pair_logps, tiny_pair_models

    policy, reference, batch = tiny_pair_models(seed=1)
    joint = dpo_batch_loss(policy, reference, batch, beta=0.1, concatenated=True)[0]
    split = dpo_batch_loss(policy, reference, batch, beta=0.1, concatenated=False)[0]
    torch.testing.assert_close(joint, split, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        ref = pair_logps(reference, batch)
    pre = dpo_batch_loss(policy, None, batch, beta=0.1, ref_logps=ref)[0]
    torch.testing.assert_close(pre, joint, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- dpo_loss against sympy and autograd


@pytest.mark.parametrize("loss_type", PAIRWISE)
def test_dpo_loss_equals_sympy(loss_type):
    pw, pl, rw, rl, beta = sp.symbols("pw pl rw rl beta", real=True)
    n_w, n_l = sp.symbols("n_w n_l", positive=True)
    kw = _kwargs(loss_type, 6)
    eps = SMOOTHING.get(loss_type, 0.0)
    expr = D.variant_loss(loss_type, pw, pl, rw, rl, beta, eps=sp.nsimplify(eps), tau=sp.nsimplify(kw.get(
        "discopop_tau", 0.05)), nw=n_w, nl=n_l)
    f = sp.lambdify((pw, pl, rw, rl, beta, n_w, n_l), expr, "math")
    grads = [sp.lambdify((pw, pl, rw, rl, beta, n_w, n_l), sp.diff(expr, v), "math") for v in (pw, pl, rw, rl)]
    x = [t.clone().requires_grad_(True) for t in _logps(scale=0.3)]
    x[0] = (x[0] + 0.7).detach().requires_grad_(True)  # a margin away from 0 (hinge's kink, discopop's switch)
    losses, r_w, r_l = dpo_loss(*x, beta=0.8, loss_type=loss_type, label_smoothing=eps, **kw)
    losses.sum().backward()
    nw = kw.get("chosen_lengths", torch.ones(6))
    nl = kw.get("rejected_lengths", torch.ones(6))
    for i in range(6):
        args = [float(t[i]) for t in x] + [0.8, float(nw[i]), float(nl[i])]
        assert abs(float(losses[i]) - f(*args)) <= 1e-9 * max(1.0, abs(f(*args)))
        for leaf, g in zip(x, grads):
            assert abs(float(leaf.grad[i]) - g(*args)) <= 1e-9 * max(1.0, abs(g(*args)))
    torch.testing.assert_close(r_w, 0.8 * (x[0] - x[2]).detach())
    torch.testing.assert_close(r_l, 0.8 * (x[1] - x[3]).detach())
    assert not r_w.requires_grad and not r_l.requires_grad


def test_sympy_variant_wrong_form_fails():
    """The sympy comparison can fail: IPO's margin 1/beta (not 1/(2 beta)) differs from dpo_loss."""
    pw, pl, rw, rl, beta = sp.symbols("pw pl rw rl beta", real=True)
    wrong = (pw - rw - pl + rl - 1 / beta) ** 2
    x = _logps(scale=0.3)
    got = dpo_loss(*x, beta=0.8, loss_type="ipo", chosen_lengths=torch.ones(6, dtype=torch.float64),
                   rejected_lengths=torch.ones(6, dtype=torch.float64))[0]
    f = sp.lambdify((pw, pl, rw, rl, beta), wrong)
    assert abs(float(got[0]) - f(*[float(t[0]) for t in x], 0.8)) > 1e-3


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_dpo_loss_gradcheck(loss_type):
    x = [t.clone().requires_grad_(True) for t in _logps(batch=4, seed=3, scale=1.0)]
    kw = _kwargs(loss_type, 4)

    def f(*inputs):
        return dpo_loss(*inputs, beta=0.5, loss_type=loss_type, label_smoothing=SMOOTHING.get(loss_type, 0.0),
                        **kw)[0]

    assert torch.autograd.gradcheck(f, tuple(x))


def test_sorting_variants_by_hand():
    x = _logps(batch=5, seed=4)
    beta, e = 0.3, 0.1
    a = torch.sort(x[0] - x[1]).values - torch.sort(x[2] - x[3]).values
    want = -(1 - e) * F.logsigmoid(beta * a) - e * F.logsigmoid(-beta * a)
    torch.testing.assert_close(dpo_loss(*x, beta=beta, loss_type="aot", label_smoothing=e)[0], want)
    u = torch.sort(x[0] - x[2]).values - torch.sort(x[1] - x[3]).values
    want = -(1 - e) * F.logsigmoid(beta * u) - e * F.logsigmoid(-beta * u)
    torch.testing.assert_close(dpo_loss(*x, beta=beta, loss_type="aot_unpaired", label_smoothing=e)[0], want)
    n = torch.tensor([3.0, 1, 4, 1, 5], dtype=torch.float64)
    sft = dpo_loss(*x, loss_type="sft", chosen_scored_tokens=n)[0]
    torch.testing.assert_close(sft, (-x[0].sum() / n.sum()).expand(5))


def test_bco_delta_is_the_papers_shift():
    x = _logps(batch=4, seed=6)
    plain = dpo_loss(*x, beta=0.2, loss_type="bco_pair")[0]
    same = dpo_loss(*x, beta=0.2, loss_type="bco_pair", bco_delta=None)[0]
    torch.testing.assert_close(plain, same)
    shifted = dpo_loss(*x, beta=0.2, loss_type="bco_pair", bco_delta=0.4)[0]
    r_w, r_l = 0.2 * (x[0] - x[2]), 0.2 * (x[1] - x[3])
    torch.testing.assert_close(shifted, -F.logsigmoid(r_w - 0.4) - F.logsigmoid(-(r_l - 0.4)))
    assert (shifted - plain).abs().max() > 1e-3


def test_edge_cases_batch_one_and_extreme_ratios():
    one = [torch.tensor([v], dtype=torch.float64) for v in (-3.0, -5.0, -4.0, -4.0)]
    for loss_type in LOSS_TYPES:
        kw = _kwargs(loss_type, 1)
        losses, r_w, r_l = dpo_loss(*one, beta=0.1, loss_type=loss_type, label_smoothing=SMOOTHING.get(loss_type, 0.0),
                                    **kw)
        assert losses.shape == r_w.shape == r_l.shape == (1,)
        assert torch.isfinite(losses).all(), loss_type
    # extreme log-ratios: logsigmoid keeps sigmoid-family losses finite and exact
    far = [torch.tensor([0.0, -1e4]), torch.tensor([-1e4, 0.0]), torch.zeros(2), torch.zeros(2)]
    losses = dpo_loss(*far, beta=1.0)[0]
    assert losses[0] == 0.0 and losses[1] == 1e4
    for loss_type in ("hinge", "robust", "nca_pair", "bco_pair", "apo_zero", "cdpo", "exo_pair"):
        out = dpo_loss(*far, beta=1.0, loss_type=loss_type, label_smoothing=SMOOTHING.get(loss_type, 0.0))[0]
        assert torch.isfinite(out).all(), loss_type
    # discopop: TRL's exp(-x) * sigmoid(x / tau) is inf * 0 = nan for a very wrong pair; lossbook's is finite
    x = torch.tensor([-1e4])
    s = torch.sigmoid(x / 0.05)
    assert torch.isnan(-F.logsigmoid(x) * (1 - s) + torch.exp(-x) * s)  # TRL's expression (its discopop branch)
    out = dpo_loss(*far, beta=1.0, loss_type="discopop")[0]
    assert torch.isfinite(out).all() and out[1] == 1e4


def test_dpo_loss_errors():
    x = _logps(batch=3)
    with pytest.raises(ValueError, match=r"'sft' needs a scored chosen token, got chosen_scored_tokens \[0"):
        dpo_loss(*x, loss_type="sft", chosen_scored_tokens=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"policy_rejected_logps has shape \[2\] but policy_chosen_logps has shape"):
        dpo_loss(x[0], x[1][:2], x[2], x[3])
    with pytest.raises(ValueError, match=r"ref_rejected_logps must be \[batch\].*got shape \[3, 1\]"):
        dpo_loss(x[0], x[1], x[2], x[3][:, None])
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['tau'\]"):
        dpo_loss(*x, loss_type="discopop", tau=0.1)
    with pytest.raises(TypeError, match=r"loss_type='sigmoid' does not use \['discopop_tau'\]"):
        dpo_loss(*x, discopop_tau=0.1)
    with pytest.raises(TypeError, match=r"loss_type='hinge' does not use \['chosen_lengths'\]"):
        dpo_loss(*x, loss_type="hinge", chosen_lengths=torch.ones(3))
    with pytest.raises(TypeError, match=r"needs \['chosen_lengths', 'rejected_lengths'\]"):
        dpo_loss(*x, loss_type="ipo")
    with pytest.raises(ValueError, match=r"chosen_lengths must have the log-probs' shape \[3\], got \[2\]"):
        dpo_loss(*x, loss_type="ipo", chosen_lengths=torch.ones(2), rejected_lengths=torch.ones(3))
    with pytest.raises(ValueError, match="TRL 1.16 silently ignores it"):
        dpo_loss(*x, label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"loss_type='hinge' does not use label_smoothing"):
        dpo_loss(*x, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 0.5\) for loss_type='robust', got 0.5"):
        dpo_loss(*x, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\) for loss_type='exo_pair', got 0.0"):
        dpo_loss(*x, loss_type="exo_pair")
    with pytest.raises(ValueError, match="loss_type must be one of"):
        dpo_loss(*x, loss_type="dpo")
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        dpo_loss(*x, beta=0.0)
    with pytest.raises(TypeError, match="policy_chosen_logps must be a floating-point tensor"):
        dpo_loss(torch.ones(3, dtype=torch.long), *x[1:])


@pytest.mark.parametrize("tau", [float("inf"), float("-inf"), float("nan"), 0.0, -0.1, torch.tensor(float("inf"))])
def test_discopop_tau_must_be_finite_and_positive(tau):
    """tau = inf makes s = sigmoid(0) = 1/2 for every pair (no switch at all), silently: refused, as nan and <= 0."""
    with pytest.raises(ValueError, match=r"discopop_tau must be a finite number > 0 .*got (inf|-inf|nan|0\.0|-0\.1)$"):
        dpo_loss(*_logps(batch=3), loss_type="discopop", discopop_tau=tau)
    ok = dpo_loss(*_logps(batch=3), loss_type="discopop", discopop_tau=torch.tensor(0.3))[0]  # a 0-dim tensor is fine
    torch.testing.assert_close(ok, dpo_loss(*_logps(batch=3), loss_type="discopop", discopop_tau=0.3)[0])


def _trl_branch(loss_type: str) -> str:
    """The body of TRL 1.16's ``loss_type == ...`` branch in ``DPOTrainer._compute_loss``, dedented."""
    import inspect
    import textwrap

    from trl import DPOTrainer

    lines = inspect.getsource(DPOTrainer._compute_loss).splitlines()
    start = next(i for i, line in enumerate(lines) if f'loss_type == "{loss_type}"' in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip().startswith(("elif loss_type", "else:")))
    return textwrap.dedent("\n".join(lines[start + 1:end]))


@pytest.mark.parametrize("loss_type", TRL_LOSS_TYPES)
def test_each_loss_function_equals_trls_branch_run_on_the_same_tensors(trl, loss_type):
    """TRL's branch source, executed on the same float32 log-probs: the same bits (the arithmetic is TRL's, in TRL's
    order), except discopop (lossbook's finite exp(-x + log s)) and sft (TRL averages per-token log-probs)."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(11)
    batch, seq = 6, 9
    pw, pl, rw, rl = (3 * torch.randn(batch, generator=g) - 10 for _ in range(4))
    lengths = torch.tensor([1, 3, 9, 4, 2, 7]), torch.tensor([5, 1, 2, 9, 3, 4])
    completion_mask = (torch.arange(seq)[None] < torch.cat(lengths)[:, None]).long()  # [2 * batch, seq]
    shift_mask = completion_mask[:, 1:]
    per_token = -torch.rand(2 * batch, seq - 1, generator=g) * shift_mask  # [2 * batch, seq - 1]
    if loss_type == "sft":
        pw, pl = per_token.sum(-1).chunk(2)  # sft reads the per-token log-probs; lossbook their sums
    beta, e, tau = 0.7, SMOOTHING.get(loss_type, 0.0), 0.3
    h_w, h_l = pw - rw, pl - rl
    ns = {"torch": torch, "F": F, "device": "cpu", "chosen_logps": pw, "rejected_logps": pl,
          "ref_chosen_logps": rw, "ref_rejected_logps": rl, "chosen_logratios": h_w, "rejected_logratios": h_l,
          "chosen_scores": h_w, "rejected_scores": h_l, "delta_score": h_w - h_l, "completion_mask": completion_mask,
          "shift_completion_mask": shift_mask, "per_token_logps": per_token,
          "self": SimpleNamespace(beta=beta, label_smoothing=e, args=SimpleNamespace(discopop_tau=tau))}
    exec(compile(_trl_branch(loss_type), f"TRL {loss_type}", "exec"), ns)
    theirs = ns["per_sequence_loss"]
    kw = {"ipo": {"chosen_lengths": lengths[0], "rejected_lengths": lengths[1]},
          "sigmoid_norm": {"chosen_lengths": lengths[0], "rejected_lengths": lengths[1]},
          "sft": {"chosen_scored_tokens": shift_mask.chunk(2)[0].sum(-1)}, "discopop": {"discopop_tau": tau}}
    mine = dpo_loss(pw, pl, rw, rl, beta=beta, loss_type=loss_type, label_smoothing=e, **kw.get(loss_type, {}))[0]
    if loss_type in ("discopop", "sft"):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(mine, theirs), (loss_type, (mine - theirs).abs().max())


def test_each_loss_type_has_one_function_citing_its_paper_and_trl_branch(trl):
    """The registry covers LOSS_TYPES in order; each docstring names a paper (its year; sft is the plain NLL) and the
    TRL branch it mirrors, which exists in the installed TRL, by name: no line numbers (they move with releases)."""
    import inspect
    import re

    from trl import DPOTrainer

    trl_source = inspect.getsource(DPOTrainer._compute_loss)
    assert tuple(LOSS_FUNCTIONS) == LOSS_TYPES
    for loss_type, fn in LOSS_FUNCTIONS.items():
        doc = inspect.getdoc(fn)
        assert loss_type == "sft" or re.search(r"\b20[12]\d\b", doc), (loss_type, "no paper year")  # sft: NLL
        branch = f'loss_type == "{"sigmoid" if loss_type == "cdpo" else loss_type}"'
        assert "DPOTrainer." in doc and f"``{branch}``" in doc, (loss_type, doc)
        if loss_type == "cdpo":  # older TRL's sigmoid branch with label_smoothing; no branch of its own in 1.16
            assert '"cdpo"' not in trl_source and "Not in TRL 1.16" in doc
        else:
            assert branch in trl_source, loss_type
        assert not re.search(r"\.py:\d|\bline \d|\blines \d", doc), (loss_type, "a line number")


def test_rendered_dpo_code_fits_the_books_column():
    """What chapter 09 renders (show_source): every line at most 100 characters, docstrings at most 15 lines."""
    import ast
    import inspect
    import textwrap

    for fn in (dpo_loss, sequence_logps, *LOSS_FUNCTIONS.values()):
        source = inspect.getsource(fn)
        long = [(len(line), line) for line in source.splitlines() if len(line) > 100]
        assert not long, (fn.__name__, long)
        doc = ast.parse(textwrap.dedent(source)).body[0].body[0]
        assert doc.end_lineno - doc.lineno + 1 <= 15, (fn.__name__, doc.end_lineno - doc.lineno + 1)


def test_bug_zoo_and_demos_import_the_shared_pair_logps_without_a_circle():
    """lossbook.bugzoo.dpo imports nothing from lossbook.demos (the demos import the zoo's unshifted_gather, to
    train on it): pair_logps lives in lossbook.dpo, and the old names still import from where they were."""
    import ast
    import inspect

    from lossbook.bugzoo import dpo as zoo
    from lossbook.demos import dpo as demo

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(zoo)))
                if isinstance(node, ast.ImportFrom)}
    assert not any("demos" in (m or "") for m in imported), imported
    assert demo.pair_logps is zoo.pair_logps is lossbook.dpo.pair_logps
    assert demo.unshifted_gather is zoo.unshifted_gather


def test_variant_keywords_table_is_exact():
    import inspect

    assert set(VARIANT_KEYWORDS) <= set(LOSS_TYPES)
    for loss_type, keywords in VARIANT_KEYWORDS.items():  # each keyword is a parameter of its type's function
        assert set(keywords) <= set(inspect.signature(LOSS_FUNCTIONS[loss_type]).parameters), loss_type
    assert set(TRL_LOSS_TYPES) | {"cdpo"} == set(LOSS_TYPES)


# ---------------------------------------------------------------- derivations


def test_derivation_optimal_policy_and_implicit_reward():
    pi, q, r, beta = D.policy_symbols(3)
    gap = D.kl_objective(pi, q, r, beta) - D.objective_gap(pi, q, r, beta)
    assert sp.simplify(sp.expand(sp.expand_log(gap, force=True))) == 0
    wrong = D.kl_objective(pi, q, r, beta) - beta * sp.log(D.partition(q, r, beta))  # the KL term forgotten
    # at a point (uniform reference, zero rewards, beta 1, pi = (1/2, 1/4, 1/4)) the gap is -KL(pi || uniform)
    point = {pi[0]: sp.Rational(1, 2), pi[1]: sp.Rational(1, 4), beta: 1, **{qi: sp.Rational(1, 3) for qi in q},
             **{ri: 0 for ri in r}}
    at_point = sp.expand_log(wrong.subs(point), force=True)
    assert sp.simplify(at_point + sp.log(sp.Rational(9, 8)) / 2) == 0  # = -(1/2) log(9/8), not 0
    st = D.stationarity(q, r, beta)
    z = D.partition(q, r, beta)
    assert all(sp.simplify(s - (beta * sp.log(z) - beta)) == 0 for s in st)
    star = D.optimal_policy(q, r, beta)
    for i in range(3):
        assert sp.simplify(sp.expand_log(D.implicit_reward(star[i], q[i], beta, z), force=True) - r[i]) == 0
    # Z cancels in Bradley-Terry: the preference probability from implicit rewards does not depend on Z
    zs, pw, pl, qw, ql = sp.symbols("Z pi_w pi_l q_w q_l", positive=True)
    bt = D.bradley_terry(D.implicit_reward(pw, qw, beta, zs), D.implicit_reward(pl, ql, beta, zs))
    assert sp.simplify(sp.diff(bt, zs)) == 0
    h_w, h_l = sp.log(pw / qw), sp.log(pl / ql)
    assert sp.simplify(-sp.log(bt) - D.dpo_loss(h_w, h_l, beta)) == 0
    # a wrong optimal policy (no exponent scaling by beta) fails the stationarity check
    wrong = [qi * sp.exp(ri) / sum(qj * sp.exp(rj) for qj, rj in zip(q, r)) for qi, ri in zip(q, r)]
    free = list(sp.symbols("u0:3", positive=True))
    j = D.kl_objective(free, q, r, beta)
    g = [sp.diff(j, u).subs(dict(zip(free, wrong))) for u in free]
    # the entries of the gradient differ by (1 - beta)(r0 - r1): equal only when beta = 1
    assert sp.simplify(sp.expand_log(g[0] - g[1], force=True) - (1 - beta) * (r[0] - r[1])) == 0
    point = {beta: 2, r[0]: 1, r[1]: 0, r[2]: 0, **{qi: sp.Rational(1, 3) for qi in q}}
    assert sp.simplify(sp.expand_log((g[0] - g[1]).subs(point), force=True)) == -1


def test_derivation_gradient_weight_ipo_robust_cdpo():
    hw, hl, d, h = sp.symbols("h_w h_l d h", real=True)
    beta, eps = sp.Symbol("beta", positive=True), sp.Symbol("epsilon", positive=True)
    loss = D.dpo_loss(hw, hl, beta)
    assert sp.simplify(sp.diff(loss, hw) + D.dpo_grad_weight(hw, hl, beta)) == 0
    assert sp.simplify(sp.diff(loss, hl) - D.dpo_grad_weight(hw, hl, beta)) == 0
    # IPO: the expected loss is minimised at margin (2p - 1) / (2 beta), 1 / (2 beta) when p = 1
    p = sp.Symbol("p", positive=True)
    sol = sp.solve(sp.diff(D.expected_loss("ipo", h, p, beta), h), h)
    assert len(sol) == 1 and sp.simplify(sol[0] - (2 * p - 1) / (2 * beta)) == 0
    assert sp.simplify(sol[0].subs(p, 1) - 1 / (2 * beta)) == 0
    # DPO: its minimiser is beta h = log(p / (1 - p)), infinite at p = 1
    dpo_grad = sp.diff(D.expected_loss("dpo", h, p, beta), h)
    assert sp.simplify(dpo_grad.subs(h, sp.log(p / (1 - p)) / beta)) == 0
    # robust DPO is unbiased: averaging over a label flipped with probability eps gives the clean loss
    noisy = (1 - eps) * D.robust_loss(d, beta, eps) + eps * D.robust_loss(-d, beta, eps)
    assert sp.simplify(noisy - D.dpo_loss(d, 0, beta)) == 0
    # cDPO is the cross-entropy against the soft label (1 - eps, eps); its optimum is beta d = log((1-eps)/eps)
    s = D.sigmoid(beta * d)
    assert sp.simplify(D.cdpo_loss(d, beta, eps) - (-(1 - eps) * sp.log(s) - eps * sp.log(1 - s))) == 0
    assert sp.simplify(sp.diff(D.cdpo_loss(d, beta, eps), d).subs(d, sp.log((1 - eps) / eps) / beta)) == 0
    # the wrong claim, that cDPO is unbiased like rDPO, fails
    noisy_c = (1 - eps) * D.cdpo_loss(d, beta, eps) + eps * D.cdpo_loss(-d, beta, eps)
    bias = (noisy_c - D.dpo_loss(d, 0, beta)).subs({beta: 1, d: sp.log(3), eps: sp.Rational(1, 4)})
    assert sp.simplify(sp.expand_log(bias, force=True) - sp.Rational(3, 8) * sp.log(3)) == 0  # 3/8 log 3, not 0


# ---------------------------------------------------------------- bug zoo


def test_bug_zoo_logps_each_fails_the_check_sequence_logps_passes():
    from lossbook.bugzoo import dpo as zoo
    from lossbook.checks import compare_losses
    from lossbook.demos.dpo import sequence_logps_cases

    cases = sequence_logps_cases()
    assert compare_losses(sequence_logps, sequence_logps, cases).passed
    for bug in (zoo.unshifted_gather, zoo.misaligned_mask, zoo.scores_the_prompt):
        result = compare_losses(bug, sequence_logps, cases, atol=1e-4)
        assert not result.passed, bug.__name__
        assert result.value_error > 1e-2, bug.__name__


def test_bug_zoo_steps_each_fail_the_check_the_pipeline_passes():
    from lossbook.bugzoo import dpo as zoo
    from lossbook.demos.dpo import check_dpo_step, dpo_batch_loss

    assert check_dpo_step(lambda p, r, b, beta: dpo_batch_loss(p, r, b, beta)[0], "pipeline").passed
    ref_grad = check_dpo_step(zoo.reference_receives_gradients)
    assert not ref_grad.passed and ref_grad.value_error <= 1e-6 and ref_grad.grad_error > 1e-4
    for bug in (zoo.sum_policy_mean_reference, zoo.beta_applied_twice):
        result = check_dpo_step(bug)
        assert not result.passed and result.value_error > 1e-3, bug.__name__


# ---------------------------------------------------------------- widgets


def test_variant_explorer_shows_lossbook_numbers():
    from lossbook.widgets.dpo import LogpsTracer, VariantExplorer

    ex = VariantExplorer(loss_type="sigmoid", beta=0.5, margin=1.0)
    assert abs(ex.loss_at - float(-F.logsigmoid(torch.tensor(1.0)))) < 1e-6
    assert abs(ex.weight_at - float(torch.sigmoid(torch.tensor(-1.0)))) < 1e-6
    ex.loss_type.value = "ipo"
    # IPO at margin m: h_w - h_l = m / beta; loss (m / beta - 1 / (2 beta))^2
    assert abs(ex.loss_at - (1.0 / 0.5 - 1 / (2 * 0.5)) ** 2) < 1e-6
    ex.loss_type.value = "sigmoid"
    ex.label_smoothing.value = 0.2
    assert ex.error is not None and "silently ignores" in ex.error and "refuses" in ex.html.value
    ex.loss_type.value = "cdpo"
    assert ex.error is None and ex.loss_at > float(-F.logsigmoid(torch.tensor(1.0)))
    for t in LOSS_TYPES:
        if t == "sft":
            continue
        ex.loss_type.value = t
        ex.label_smoothing.value = 0.1 if t in SMOOTHING else 0.0
        assert ex.error is None and math.isfinite(ex.loss_at), t
    tr = LogpsTracer(prompt=2, completion=3, padding=1)
    logits, labels, mask = tr.tensors()
    assert tr.logp == float(sequence_logps(logits, labels, mask)[0])
    assert abs(tr.logp - tr.unshifted) > 1e-3 and tr.steps[-1][1] == [1]


def test_bco_delta_and_smoothing_types_are_checked():
    x = _logps(batch=3)
    with pytest.raises(TypeError, match="bco_delta must be a real number"):
        dpo_loss(*x, loss_type="bco_pair", bco_delta="0.1")
    with pytest.raises(ValueError, match=r"bco_delta must be a number or a 0-dim tensor.*\[3\]"):
        dpo_loss(*x, loss_type="bco_pair", bco_delta=torch.zeros(3))
    same = dpo_loss(*x, loss_type="bco_pair", bco_delta=torch.tensor(0.2))[0]
    torch.testing.assert_close(same, dpo_loss(*x, loss_type="bco_pair", bco_delta=0.2)[0])
    with pytest.raises(TypeError, match="label_smoothing must be a real number"):
        dpo_loss(*x, loss_type="robust", label_smoothing=None)


def test_demo_sampling_is_reproducible_and_the_property_is_literal():
    from lossbook.demos.dpo import has_property, sample, tiny_pair_models

    policy, _, batch = tiny_pair_models(seed=0)
    prompts = batch["chosen_ids"][:, :2]
    a = sample(policy, prompts, 5, generator=torch.Generator().manual_seed(3))
    b = sample(policy, prompts, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (4, 7) and torch.equal(a[:, :2], prompts)
    assert has_property("over the hill") and not has_property("The end") and not has_property("tHe")


def test_demo_preference_splits_share_no_prompt():
    """The test prompts come from held-out rhymes and none of them also starts a training line."""
    from lossbook.demos.causal_lm import load_rhymes
    from lossbook.demos.dpo import make_preferences
    from lossbook.models import TinyTransformer

    data = load_rhymes()
    torch.manual_seed(0)
    model = TinyTransformer(data.tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1, max_len=16).eval()
    prefs, rates = make_preferences(model, data, completion_len=4, samples=4, word="e", seed=0)
    as_set = lambda t: {tuple(row.tolist()) for row in t}  # noqa: E731
    train, val, test = (as_set(getattr(prefs, s)["prompts"]) for s in ("train", "val", "test"))
    assert train and val and test
    assert not (train & val) and not (test & (train | val))
    assert set(rates) == {"train", "val", "test"}
