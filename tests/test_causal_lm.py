"""causal_lm_loss against transformers' ForCausalLMLoss, sympy and autograd; chapter 02's widget, bugs and demo."""

import math
from collections import Counter

import pytest
import sympy as sp
import torch
import torch.nn.functional as F

from lossbook import causal_lm_loss, fixed_cross_entropy
from lossbook.bugzoo import causal_lm as bugs
from lossbook.causal_lm import next_token_labels
from lossbook.checks import compare_losses
from lossbook.demos import causal_lm as demo
from lossbook.derivations import causal_lm as dcl
from lossbook.derivations import softmax
from lossbook.models import TinyTransformer
from lossbook.widgets.causal_lm import AlignmentViewer

TOL = {torch.float32: 1e-6, torch.bfloat16: 0.0, torch.float16: 0.0}  # half: same upcast, same kernel


def _inputs(seed, batch, seq, vocab, dtype=torch.float32, scale=3.0):
    """Logits and labels with right padding of a different length per row (row b: b pad positions)."""
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(batch, seq, vocab, generator=g)).to(dtype)  # [batch, seq, vocab]
    labels = torch.randint(0, vocab, (batch, seq), generator=g)  # [batch, seq]
    for row in range(batch):
        if row:
            labels[row, max(seq - row, 0) :] = -100
    return logits, labels


def _value_and_grad(fn, logits, *args, **kwargs):
    leaf = logits.detach().clone().requires_grad_(True)
    loss = fn(leaf, *args, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad


def _assert_same(ours, theirs, tol):
    assert ours[0].dtype == theirs[0].dtype
    assert ours[1].dtype == theirs[1].dtype
    torch.testing.assert_close(ours[0], theirs[0], atol=tol, rtol=tol, equal_nan=True)
    torch.testing.assert_close(ours[1], theirs[1], atol=tol, rtol=tol, equal_nan=True)


# ---- parity with transformers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch,seq,vocab", [(1, 1, 5), (1, 7, 11), (3, 8, 13), (4, 16, 50), (2, 1, 3), (1, 2, 2)])
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("num_items", [None, 11, "tensor"])
def test_parity_with_transformers(hf_loss_utils, seed, batch, seq, vocab, dtype, num_items):
    logits, labels = _inputs(seed, batch, seq, vocab, dtype)
    if num_items == "tensor":
        num_items = torch.tensor(batch * seq + 2)
    ours = _value_and_grad(causal_lm_loss, logits, labels, num_items_in_batch=num_items)
    theirs = _value_and_grad(hf_loss_utils.ForCausalLMLoss, logits, labels, vocab, num_items_in_batch=num_items)
    assert ours[0].dtype == torch.float32  # the upcast
    _assert_same(ours, theirs, TOL[dtype])


@pytest.mark.parametrize("dtype", list(TOL))
def test_length_one_is_nan_as_upstream_and_zero_with_a_count(hf_loss_utils, dtype):
    logits, labels = _inputs(0, 3, 1, 7, dtype)
    value, grad = _value_and_grad(causal_lm_loss, logits, labels)
    assert torch.isnan(value) and torch.isnan(hf_loss_utils.ForCausalLMLoss(logits, labels, 7))
    assert torch.equal(grad, torch.zeros_like(grad))  # documented: NaN value, zero gradient
    value, grad = _value_and_grad(causal_lm_loss, logits, labels, num_items_in_batch=5)
    assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("ignore_index", [-100, -1, 0, 3])
def test_parity_for_other_ignore_index(hf_loss_utils, ignore_index):
    logits, labels = _inputs(4, 3, 9, 6)
    labels[labels == -100] = ignore_index
    labels[0, ::3] = ignore_index
    ours = _value_and_grad(causal_lm_loss, logits, labels, ignore_index=ignore_index)
    theirs = _value_and_grad(hf_loss_utils.ForCausalLMLoss, logits, labels, 6, ignore_index=ignore_index)
    _assert_same(ours, theirs, 1e-6)


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4, 5)], ids=["[seq, vocab]", "[b, k, seq, vocab]"])
def test_parity_for_other_ranks(hf_loss_utils, shape):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(*shape, generator=g)
    labels = torch.randint(0, shape[-1], shape[:-1], generator=g)
    ours = _value_and_grad(causal_lm_loss, logits, labels)
    theirs = _value_and_grad(hf_loss_utils.ForCausalLMLoss, logits, labels, shape[-1])
    _assert_same(ours, theirs, 1e-6)


@pytest.mark.parametrize("num_items", [None, 9, "tensor"])
def test_parity_with_shift_labels_and_no_labels(hf_loss_utils, num_items):
    logits, labels = _inputs(5, 2, 6, 8)
    shifted = next_token_labels(labels)
    if num_items == "tensor":
        num_items = torch.tensor(9)
    ours = _value_and_grad(causal_lm_loss, logits, None, shift_labels=shifted, num_items_in_batch=num_items)
    theirs = _value_and_grad(hf_loss_utils.ForCausalLMLoss, logits, None, 8, shift_labels=shifted,
                             num_items_in_batch=num_items)
    _assert_same(ours, theirs, 1e-6)
    # labels are not used when shift_labels is given (as upstream), and the default path shifts the same way
    ignored = _value_and_grad(causal_lm_loss, logits, torch.zeros_like(labels), shift_labels=shifted,
                              num_items_in_batch=num_items)
    default = _value_and_grad(causal_lm_loss, logits, labels, num_items_in_batch=num_items)
    _assert_same(ignored, ours, 0.0)
    _assert_same(default, ours, 0.0)


def test_next_token_labels_is_the_padded_slice():
    labels = torch.tensor([[5, 6, 7, -100], [1, 2, 3, 4]])
    assert next_token_labels(labels).tolist() == [[6, 7, -100, -100], [2, 3, 4, -100]]
    assert next_token_labels(labels, ignore_index=0).tolist() == [[6, 7, -100, 0], [2, 3, 4, 0]]
    assert next_token_labels(torch.tensor([9])).tolist() == [-100]


def test_vocab_size_given_and_defaulted_agree(hf_loss_utils):
    logits, labels = _inputs(6, 2, 5, 7)
    assert causal_lm_loss(logits, labels, vocab_size=7).item() == causal_lm_loss(logits, labels).item()
    assert causal_lm_loss(logits, labels, 7).item() == hf_loss_utils.ForCausalLMLoss(logits, labels, 7).item()


def test_deliberate_differences_from_upstream(hf_loss_utils):
    logits, labels = _inputs(7, 2, 6, 5)
    # float64 stays float64 (upstream rounds to float32); values agree to float32 rounding
    ours = causal_lm_loss(logits.double(), labels)
    theirs = hf_loss_utils.ForCausalLMLoss(logits.double(), labels, 5)
    assert ours.dtype == torch.float64 and theirs.dtype == torch.float32
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    # label_smoothing reaches the cross-entropy here; upstream swallows it
    smoothed = causal_lm_loss(logits, labels, label_smoothing=0.1)
    plain = fixed_cross_entropy(logits.view(-1, 5), next_token_labels(labels).view(-1))
    expected = F.cross_entropy(logits.view(-1, 5), next_token_labels(labels).view(-1), label_smoothing=0.1)
    torch.testing.assert_close(smoothed, expected)
    torch.testing.assert_close(hf_loss_utils.ForCausalLMLoss(logits, labels, 5, label_smoothing=0.1), plain)
    # int32 labels and non-contiguous logits: accepted here, refused upstream
    torch.testing.assert_close(causal_lm_loss(logits, labels.int()), causal_lm_loss(logits, labels))
    wide = torch.randn(2, 7, 5)
    torch.testing.assert_close(causal_lm_loss(wide[:, :-1], labels), causal_lm_loss(wide[:, :-1].contiguous(), labels))
    with pytest.raises(RuntimeError):
        hf_loss_utils.ForCausalLMLoss(wide[:, :-1], labels, 5)


@pytest.mark.parametrize("seed", range(3))
def test_gradcheck_float64(seed):
    logits, labels = _inputs(seed, 2, 5, 4, torch.float64)
    logits.requires_grad_(True)
    shifted = next_token_labels(labels)
    assert torch.autograd.gradcheck(lambda z: causal_lm_loss(z, labels), (logits,))
    assert torch.autograd.gradcheck(lambda z: causal_lm_loss(z, labels, num_items_in_batch=7), (logits,))
    assert torch.autograd.gradcheck(lambda z: causal_lm_loss(z, None, shift_labels=shifted), (logits,))


# ---- sympy --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_sympy_value_gradient_and_perplexity_equal_lossbook(seed):
    seq, vocab = 5, 3
    zs = dcl.position_logits(seq, vocab)
    flat = [z for row in zs for z in row]
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(1, seq, vocab, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, vocab, (seq,), generator=g).tolist()
    tokens[2] = -100  # an ignored label: position 1 has no target
    leaf = logits.clone().requires_grad_(True)
    loss = causal_lm_loss(leaf, torch.tensor([tokens]))
    loss.backward()
    values = logits.flatten().tolist()
    expected = sp.lambdify(flat, dcl.mean_next_token_nll(zs, tokens))(*values)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    closed = dcl.next_token_grad(zs, tokens)
    grad = torch.tensor([[float(sp.lambdify(flat, gi)(*values)) for gi in row] for row in closed], dtype=torch.float64)
    torch.testing.assert_close(leaf.grad[0], grad, atol=1e-12, rtol=0)
    assert torch.equal(leaf.grad[0, 1], torch.zeros(vocab, dtype=torch.float64))  # ignored target
    assert torch.equal(leaf.grad[0, -1], torch.zeros(vocab, dtype=torch.float64))  # the last position
    ppl = sp.lambdify(flat, dcl.perplexity(zs, tokens))(*values)
    assert math.exp(loss.item()) == pytest.approx(ppl, rel=1e-12)


def test_sympy_identities():
    joint = dcl.joint_symbols(3, 2)
    factors = dcl.chain_rule_factors(joint, (1, 0, 1))
    assert sp.simplify(sp.Mul(*factors) - joint[(1, 0, 1)] / sum(joint.values())) == 0
    zs, tokens = dcl.position_logits(4, 3), [2, 0, 1, 1]
    nll, mean = dcl.sequence_nll(zs, tokens), dcl.mean_next_token_nll(zs, tokens)
    assert sp.simplify(sp.expand_log(nll, force=True) / 3 - sp.expand_log(mean, force=True)) == 0
    probs = [softmax(z)[y] for z, y in zip(zs[:-1], tokens[1:])]
    log_ppl = sp.expand_log(sp.log(dcl.perplexity(zs, tokens)), force=True)
    assert sp.simplify(log_ppl - sp.expand_log(sp.log(dcl.inverse_geometric_mean(probs)), force=True)) == 0
    uniform = {z: 0 for row in zs for z in row}
    assert sp.simplify(dcl.perplexity(zs, tokens).subs(uniform)) == 3  # a uniform model: perplexity = vocab
    grad = dcl.next_token_grad(zs, tokens)
    assert all(sp.simplify(sp.diff(mean, zs[t][i]) - grad[t][i]) == 0 for t in range(4) for i in range(3))


# ---- bad input --------------------------------------------------------------------------------------------------


def _idx(*shape):
    return torch.zeros(*shape, dtype=torch.long)


@pytest.mark.parametrize(
    "args,kwargs,error,message",
    [
        ((torch.randn(2, 5, 7), _idx(2, 5)), {"vocab_size": 5}, ValueError, r"vocab_size=5 .*shape \[2, 5, 7\]"),
        ((torch.randn(2, 5, 7), _idx(10)), {}, ValueError, r"labels must have shape \[2, 5\].*got \[10\]"),
        ((torch.randn(2, 5, 7), _idx(2, 6)), {}, ValueError, r"labels must have shape \[2, 5\].*got \[2, 6\]"),
        ((torch.randn(2, 5, 7), None), {"shift_labels": _idx(2, 4)}, ValueError,
         r"shift_labels must have shape \[2, 5\].*got \[2, 4\]"),
        ((torch.randn(2, 5, 7), torch.zeros(2, 5)), {}, TypeError, r"labels must hold integer .*shape \[2, 5\]"),
        ((torch.randn(2, 5, 7), None), {}, TypeError, "needs labels"),
        ((torch.randn(7), _idx(1)), {}, ValueError, r"logits must be .*got shape \[7\]"),
        ((_idx(2, 5, 7), _idx(2, 5)), {}, TypeError, r"logits must be a floating.*shape \[2, 5, 7\]"),
        ((torch.randn(2, 5, 7), _idx(2, 5)), {"vocab_size": 7.0}, TypeError, "vocab_size must be an int"),
        ((torch.randn(1, 3, 7), torch.tensor([[1, 7, 2]])), {}, ValueError, r"labels holds token id 7.*\[1, 3\]"),
        ((torch.randn(1, 3, 7), torch.tensor([[-5, 1, 2]])), {}, ValueError, r"labels holds token id -5"),
        ((torch.randn(2, 5, 7), _idx(2, 5)), {"reduction": "sum"}, TypeError, "num_items_in_batch"),
        ((torch.randn(2, 5, 7), [[0] * 5] * 2), {}, TypeError, r"labels must be a torch.Tensor, got list"),
        ((torch.randn(2, 5, 7), [[0] * 5] * 2), {"num_items_in_batch": 4}, TypeError,
         r"labels must be a torch.Tensor, got list"),
        ((torch.randn(2, 5, 7), None), {"shift_labels": [[0] * 5] * 2}, TypeError,
         r"shift_labels must be a torch.Tensor, got list"),
    ],
)
def test_bad_input_errors_name_argument_and_shapes(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        causal_lm_loss(*args, **kwargs)


# ---- sharded sequences --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [2, 3, 4])
def test_shards_shifted_once_add_up_to_the_full_loss(hf_loss_utils, shards):
    logits, labels = _inputs(8, 3, 12, 9)
    full = _value_and_grad(causal_lm_loss, logits, labels)
    once = _value_and_grad(lambda z, y: sum(demo.sharded_losses(z, y, shards)), logits, labels)
    local = _value_and_grad(lambda z, y: sum(demo.sharded_losses(z, y, shards, shift="local")), logits, labels)
    torch.testing.assert_close(once, full, atol=1e-6, rtol=1e-6)
    assert abs(local[0] - full[0]) > 1e-3 and (local[1] - full[1]).abs().max() > 1e-3
    # the shard recipe is transformers' own: its ForCausalLMLoss with per-shard shift_labels agrees
    shifted = next_token_labels(labels)
    total = (shifted != -100).sum()
    pieces = [(z.contiguous(), s.contiguous()) for z, s in zip(logits.chunk(shards, 1), shifted.chunk(shards, 1))]
    theirs = sum(hf_loss_utils.ForCausalLMLoss(z, None, 9, num_items_in_batch=total, shift_labels=s) for z, s in pieces)
    torch.testing.assert_close(once[0], theirs, atol=1e-6, rtol=1e-6)


def test_sharded_losses_refuses_bad_arguments():
    logits, labels = _inputs(0, 2, 4, 3)
    with pytest.raises(ValueError, match="shift must be"):
        demo.sharded_losses(logits, labels, 2, shift="twice")
    with pytest.raises(ValueError, match=r"labels must have shape \[2, 4\]"):
        demo.sharded_losses(logits, labels[:, :3], 2)


# ---- bug zoo ---------------------------------------------------------------------------------------------------

BUGS = [bugs.shifts_twice, bugs.forgets_to_shift, bugs.scores_the_padding, bugs.shifts_each_shard]


@pytest.mark.parametrize("bug", BUGS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_bug_fails_the_check_lossbook_passes(hf_loss_utils, bug, seed):
    cases = demo.causal_lm_cases(seed)

    def upstream(logits, labels, ignore_index):
        return hf_loss_utils.ForCausalLMLoss(logits, labels, logits.shape[-1], ignore_index=ignore_index)

    assert compare_losses(causal_lm_loss, upstream, cases, atol=1e-6).passed
    result = compare_losses(bug, causal_lm_loss, cases)
    assert not result.passed, result


@pytest.mark.parametrize("dtype", list(TOL))
def test_shared_cases_match_upstream_exactly(hf_loss_utils, dtype):
    def upstream(logits, labels, ignore_index):
        return hf_loss_utils.ForCausalLMLoss(logits, labels, logits.shape[-1], ignore_index=ignore_index)

    result = compare_losses(causal_lm_loss, upstream, demo.causal_lm_cases(2, dtype=dtype), atol=TOL[dtype])
    assert result.passed, result


def test_forgetting_to_shift_rewards_a_model_that_copies():
    ids = torch.randint(1, 9, (2, 20), generator=torch.Generator().manual_seed(0))
    copier = demo.copying_logits(ids, 9)
    assert copier.shape == (2, 20, 9)
    assert bugs.forgets_to_shift(copier, ids).item() < 1e-6
    assert causal_lm_loss(copier, ids).item() > 5.0


# ---- widget ----------------------------------------------------------------------------------------------------


def test_alignment_viewer_shows_what_lossbook_computes():
    viewer = AlignmentViewer(text="Jack and Jill", padding=2, position=0)
    viewer.position.value = 3
    viewer.logit.value = 6.0
    input_ids, labels, logits = viewer.tensors()
    target = int(next_token_labels(labels)[0, 3])
    assert logits[0, 3, target].item() == 6.0 and input_ids.shape == (1, 15)
    leaf = logits.clone().requires_grad_(True)
    loss = causal_lm_loss(leaf, labels)
    loss.backward()
    assert viewer.loss == pytest.approx(loss.item(), rel=1e-12)
    assert viewer.kept == 12  # 13 characters, the last has no successor, padding has no target
    expected_row = (logits[0, 3].softmax(-1) - F.one_hot(torch.tensor(target), logits.shape[-1])) / 12
    torch.testing.assert_close(torch.tensor(viewer.grad, dtype=torch.float64), expected_row)
    torch.testing.assert_close(torch.tensor(viewer.grad, dtype=torch.float64), leaf.grad[0, 3])
    assert f">{loss.item():.4f}<" in viewer.html.value
    before = viewer.loss
    viewer.logit.value = 10.0  # the target gets likelier: the loss falls
    assert viewer.loss < before


def test_alignment_viewer_positions_without_target_get_no_gradient():
    viewer = AlignmentViewer(text="Humpty", padding=3)
    viewer.position.value = 5  # the last character
    assert viewer.targets[5] is None and viewer.grad == [0.0] * len(viewer.grad)
    assert "nothing follows it" in viewer.html.value
    loss = viewer.loss
    viewer.logit.value = 11.0  # moving a logit the loss ignores
    assert viewer.loss == loss
    viewer.position.value = 7  # padding
    assert "padding" in viewer.html.value and viewer.grad == [0.0] * len(viewer.grad)
    viewer.padding.value = 0
    assert viewer.position.max == 5 and viewer.kept == 5


def test_alignment_viewer_needs_two_characters():
    with pytest.raises(ValueError, match="at least 2 characters"):
        AlignmentViewer(text="J")


# ---- demo helpers -------------------------------------------------------------------------------------------


def test_rhyme_split_holds_out_whole_rhymes():
    data = demo.load_rhymes()
    again = demo.load_rhymes()
    assert torch.equal(data.train_ids, again.train_ids) and torch.equal(data.heldout_ids, again.heldout_ids)
    assert len(data.heldout_titles) == data.heldout_text.count("\n\n")
    for title in data.heldout_titles:
        assert title in data.heldout_text and title not in data.train_text
    assert data.tokenizer.decode(data.heldout_ids) == data.heldout_text
    with pytest.raises(ValueError, match="heldout_every"):
        demo.load_rhymes(1)


def test_unigram_nll_is_the_smoothed_frequency_entropy():
    train, held = torch.tensor([1, 1, 2, 3]), torch.tensor([1, 3, 0])
    counts = Counter(train.tolist())
    p = {k: (counts.get(k, 0) + 1) / (4 + 4) for k in range(4)}
    expected = -sum(math.log(p[k]) for k in held.tolist()) / 3
    assert demo.unigram_nll(train, held, 4) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("length", [1, 4, 7, 10])
def test_stream_windows_score_every_next_token_once(length):
    ids = torch.arange(1, 11)
    inputs, targets = demo.stream_windows(ids, length)
    assert inputs.shape == targets.shape == (math.ceil(10 / length), length)
    assert inputs.flatten()[:10].tolist() == ids.tolist()
    assert targets.flatten()[targets.flatten() != -100].tolist() == ids[1:].tolist()


class _Bigram(torch.nn.Module):
    """Logits that depend on the current token only, so windowing cannot change them."""

    def __init__(self, vocab):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, ids):
        return self.table(ids)


def test_mean_nll_over_windows_equals_the_whole_stream_loss():
    torch.manual_seed(0)
    model = _Bigram(12)
    ids = torch.randint(1, 12, (50,), generator=torch.Generator().manual_seed(1))
    inputs, targets = demo.stream_windows(ids, 8)
    whole = causal_lm_loss(model(ids[None]), ids[None]).item()
    assert demo.mean_nll(model, inputs, targets, batch_size=3) == pytest.approx(whole, rel=1e-6)


def test_tiny_gpt_forward_and_loss_shapes():
    data = demo.load_rhymes()
    torch.manual_seed(0)
    model = TinyTransformer(data.tokenizer.vocab_size, d_model=32, n_heads=4, n_layers=1, max_len=16)
    x = data.train_ids[:32].view(2, 16)
    logits = model(x)
    assert logits.shape == (2, 16, data.tokenizer.vocab_size)
    # an untrained model is close to uniform: loss near log(vocab)
    assert abs(causal_lm_loss(logits, x).item() - math.log(data.tokenizer.vocab_size)) < 1.0


def test_alignment_viewer_slider_shows_the_logit_it_computes_with_and_ignores_echoes():
    """The slider-echo bug: the logit slider showed a rounded value while the loss used the unrounded logit,
    and a browser echo of that value (a hair off) was recorded as an edit, moving the loss."""
    viewer = AlignmentViewer(text="Jack and Jill", padding=2, position=0)
    for t in range(viewer.position.max + 1):
        viewer.position.value = t
        input_ids, labels, logits = viewer.tensors()
        k = viewer.targets[t] if viewer.targets[t] is not None else int(input_ids[0, t])
        assert viewer.logit.value == logits[0, t, k].item(), t  # displayed == computed with
    viewer.position.value = 2
    loss, overrides = viewer.loss, dict(viewer.overrides)
    viewer.logit.value = viewer.logit.value + 1e-9  # the browser's echo, a hair off
    assert viewer.loss == loss and viewer.overrides == overrides
    assert viewer.logit.value == viewer.tensors()[2][0, 2, viewer.targets[2]].item()
    viewer.logit.value = 7.3  # off the grid: rounded to the step, and the loss uses what is shown
    assert viewer.logit.value == 7.5
    assert viewer.tensors()[2][0, 2, viewer.targets[2]].item() == 7.5


def test_rhyme_splits_are_disjoint_whole_rhymes_and_test_is_the_old_heldout():
    from lossbook.demos import causal_lm as demo

    splits = demo.load_rhyme_splits()
    old = demo.load_rhymes(heldout_every=6)
    assert torch.equal(splits.test_ids, old.heldout_ids) and splits.test_titles == old.heldout_titles
    assert not set(splits.val_titles) & set(splits.test_titles)
    assert len(splits.train_ids) + len(splits.val_ids) == len(old.train_ids)
    with pytest.raises(ValueError, match="two different offsets"):
        demo.load_rhyme_splits(val_offset=5)


def test_ngram_nll_counts_by_hand():
    from lossbook.demos import causal_lm as demo

    train, data = torch.tensor([0, 1, 0, 1, 1]), torch.tensor([0, 1, 1])
    # bigram, add 1, vocab 2: p(1|0) = (2+1)/(2+2), p(1|1) = (1+1)/(2+2)  (contexts: 0 twice, 1 twice)
    expected = -(math.log(3 / 4) + math.log(2 / 4)) / 2
    assert demo.ngram_nll(train, data, 2, order=2, add=1.0) == pytest.approx(expected)
    # unigram, add 1: p(1) = (3+1)/(5+2)
    assert demo.ngram_nll(train, data, 2, order=1, add=1.0) == pytest.approx(-math.log(4 / 7))
    with pytest.raises(ValueError, match="add must be > 0"):
        demo.ngram_nll(train, data, 2, add=0)
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        demo.ngram_nll(train, data, 2, order=0)


@pytest.mark.parametrize("n,length,stride", [(10, 4, 2), (37, 8, 3), (16, 4, 4), (5, 8, 2)])
def test_strided_windows_score_every_target_once(n, length, stride):
    from lossbook.demos import causal_lm as demo

    ids = torch.arange(1, n + 1)
    x, y = demo.strided_windows(ids, length, stride)
    kept = y[y != -100]
    assert sorted(kept.tolist()) == list(range(2, n + 1))  # every target x_1 ... x_{n-1} exactly once
    assert ((x == y - 1) | (y == -100)).all()  # each target is the next token of its input
    if stride == length:
        sx, sy = demo.stream_windows(ids, length)
        assert torch.equal(x, sx) and torch.equal(y, sy)
    for row in y[1:]:  # after the first window, only the last `stride` positions (or fewer) are scored
        assert (row[: length - stride] == -100).all()
