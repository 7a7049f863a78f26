"""Chapter 03: masked_lm_loss and mask_tokens against transformers, sympy, autograd and statistics."""

import pytest
import sympy as sp
import torch
from conftest import require

import lossbook
from lossbook import derivations, masked_lm_loss
from lossbook.bugzoo import masked_lm as zoo
from lossbook.checks import compare_losses
from lossbook.demos import masked_lm as demo
from lossbook.derivations import masked_lm as dm
from lossbook.masked_lm import mask_then_score, mask_tokens, sample_masking
from lossbook.models import TinyTransformer
from lossbook.text import CharTokenizer, load_text
from lossbook.widgets.masked_lm import MaskingExplorer

DTYPES = {torch.float32: 1e-6, torch.bfloat16: 0.0, torch.float16: 0.0}  # half: same float32 kernel, exact
SHAPES = [(1, 1, 5), (1, 9, 7), (3, 5, 11), (2, 1, 4), (4, 16, 30), (6, 13)]  # the last: [seq, vocab]


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer(load_text("nursery_rhymes"))


def _inputs(seed, shape, dtype, kept=0.15, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(*shape, generator=g)).to(dtype)
    labels = torch.randint(0, shape[-1], shape[:-1], generator=g)
    labels[torch.rand(shape[:-1], generator=g) > kept] = -100
    labels.view(-1)[0] = int(torch.randint(0, shape[-1], (1,), generator=g))  # at least one kept
    return logits, labels


def _value_and_grad(fn, logits, labels, *args, **kwargs):
    leaf = logits.detach().clone().requires_grad_(True)
    loss = fn(leaf, labels, *args, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad


def _hf(hf_loss_utils, logits, labels, **kwargs):
    return hf_loss_utils.ForMaskedLMLoss(logits, labels, logits.shape[-1], **kwargs)


# --- parity with transformers ForMaskedLMLoss -------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("num_items", [None, 7, "tensor"])
def test_parity_with_transformers(hf_loss_utils, seed, shape, dtype, num_items):
    logits, labels = _inputs(seed, shape, dtype)
    if num_items == "tensor":
        num_items = torch.tensor(int((labels != -100).sum()) + 2)
    ours = _value_and_grad(masked_lm_loss, logits, labels, num_items_in_batch=num_items)
    theirs = _value_and_grad(lambda z, y, **kw: _hf(hf_loss_utils, z, y, **kw), logits, labels,
                             num_items_in_batch=num_items)
    tol = DTYPES[dtype]
    assert ours[0].dtype == theirs[0].dtype == torch.float32  # the upcast
    assert ours[1].dtype == theirs[1].dtype == dtype  # the gradient flows back to the logits' dtype
    torch.testing.assert_close(ours[0], theirs[0], atol=tol, rtol=tol)
    torch.testing.assert_close(ours[1], theirs[1], atol=tol, rtol=tol)


@pytest.mark.parametrize("vocab_size", [None, "given"])
def test_vocab_size_given_or_inferred(hf_loss_utils, vocab_size):
    logits, labels = _inputs(3, (2, 6, 9), torch.float32)
    kw = {} if vocab_size is None else {"vocab_size": 9}
    torch.testing.assert_close(_value_and_grad(masked_lm_loss, logits, labels, **kw),
                               _value_and_grad(lambda z, y: _hf(hf_loss_utils, z, y), logits, labels))


@pytest.mark.parametrize("ignore_index", [-100, -1, 3])
def test_parity_for_other_ignore_index(hf_loss_utils, ignore_index):
    logits, labels = _inputs(4, (3, 8, 6), torch.float32, kept=1.0)
    labels[:, ::3] = ignore_index
    ours = _value_and_grad(masked_lm_loss, logits, labels, ignore_index=ignore_index)
    theirs = _value_and_grad(lambda z, y: _hf(hf_loss_utils, z, y, ignore_index=ignore_index), logits, labels)
    torch.testing.assert_close(ours, theirs)


def test_all_ignored_is_nan_as_upstream_and_zero_with_a_count(hf_loss_utils):
    logits = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), -100)
    value, grad = _value_and_grad(masked_lm_loss, logits, labels)
    theirs = _value_and_grad(lambda z, y: _hf(hf_loss_utils, z, y), logits, labels)
    assert torch.isnan(value) and torch.isnan(theirs[0])
    assert torch.equal(grad, torch.zeros_like(grad)) and torch.equal(theirs[1], grad)
    for count in (4, torch.tensor(4)):
        value, grad = _value_and_grad(masked_lm_loss, logits, labels, num_items_in_batch=count)
        assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_extreme_logits_match(hf_loss_utils):
    logits = torch.tensor([[[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0], [1e4, -1e4, 0.0]]])
    labels = torch.tensor([[1, 0, -100]])
    ours = _value_and_grad(masked_lm_loss, logits, labels)
    theirs = _value_and_grad(lambda z, y: _hf(hf_loss_utils, z, y), logits, labels)
    torch.testing.assert_close(ours, theirs)
    assert ours[0].item() == pytest.approx(200.0, rel=1e-6)  # (200 + 200) / 2: the third position is ignored


def test_only_selected_positions_get_gradient():
    logits, labels = _inputs(5, (3, 10, 8), torch.float64)
    value, grad = _value_and_grad(masked_lm_loss, logits, labels)
    ignored = labels == -100
    assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))
    kept = ~ignored
    onehot = torch.nn.functional.one_hot(labels[kept], 8).double()
    torch.testing.assert_close(grad[kept], (logits[kept].softmax(-1) - onehot) / kept.sum())


def test_float64_stays_float64_and_gradcheck(hf_loss_utils):
    logits, labels = _inputs(6, (2, 5, 6), torch.float64, kept=0.5)
    ours = masked_lm_loss(logits, labels)
    assert ours.dtype == torch.float64  # upstream rounds to float32: a stated difference
    assert ours.item() == pytest.approx(_hf(hf_loss_utils, logits, labels).item(), rel=1e-6)
    leaf = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: masked_lm_loss(z, labels), (leaf,))
    assert torch.autograd.gradcheck(lambda z: masked_lm_loss(z, labels, num_items_in_batch=9), (leaf,))


def test_non_contiguous_logits_are_accepted(hf_loss_utils):
    logits, labels = _inputs(7, (2, 6, 5), torch.float32)
    strided = logits.transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous
    assert not strided.is_contiguous()
    torch.testing.assert_close(masked_lm_loss(strided, labels), _hf(hf_loss_utils, logits, labels))


# --- sympy ---------------------------------------------------------------------------------------------------


def test_sympy_loss_and_gradient_equal_lossbook():
    g = torch.Generator().manual_seed(8)
    seq, vocab = 4, 3
    zs = [derivations.logit_symbols(vocab, f"z{t}_") for t in range(seq)]
    flat = [z for row in zs for z in row]
    for _ in range(5):
        tokens = torch.randint(0, vocab, (seq,), generator=g).tolist()
        selected = (torch.rand(seq, generator=g) < 0.5).tolist()
        selected[0] = True
        labels = torch.tensor([dm.mlm_labels(tokens, selected)])  # [1, seq]
        logits = (3 * torch.randn(1, seq, vocab, generator=g, dtype=torch.float64)).requires_grad_()
        ours = masked_lm_loss(logits, labels)
        ours.backward()
        values = logits.detach().flatten().tolist()
        expected = sp.lambdify(flat, dm.masked_cross_entropy(zs, tokens, selected))(*values)
        assert ours.item() == pytest.approx(expected, rel=1e-12)
        grad = dm.masked_cross_entropy_grad(zs, tokens, selected)
        by_sympy = torch.tensor([[float(sp.lambdify(flat, gi)(*values)) for gi in row] for row in grad],
                                dtype=torch.float64)
        torch.testing.assert_close(by_sympy, logits.grad[0], atol=1e-12, rtol=0)
        # the closed form is the derivative of the loss
        loss = dm.masked_cross_entropy(zs, tokens, selected)
        assert all(sp.simplify(sp.diff(loss, zs[t][i]) - grad[t][i]) == 0 for t in range(seq) for i in range(vocab))


def test_masking_arithmetic_is_exact():
    p, m, r = sp.Rational(3, 20), sp.Rational(4, 5), sp.Rational(1, 10)
    fate = dm.masking_outcomes(p, m, r)
    assert fate["<mask>"] == sp.Rational(12, 100) and fate["random"] == sp.Rational(15, 1000)
    assert fate["unchanged"] == sp.Rational(15, 1000)
    assert sp.simplify(fate["not selected"] + fate["<mask>"] + fate["random"] + fate["unchanged"] - 1) == 0
    odds = dm.visible_position_odds(p, m, r)
    assert odds == {"scored": sp.Rational(3, 88), "corrupted": sp.Rational(3, 176),
                    "corrupted if scored": sp.Rational(1, 2)}
    assert dm.visible_position_odds(p, 1, 0)["scored"] == 0  # all <mask>: visible tokens are never scored
    n = sp.Symbol("N", positive=True, integer=True)
    assert sp.simplify(dm.expected_scored(n, p) - p * n) == 0
    assert dm.no_position_scored(4, p) == sp.Rational(17, 20) ** 4


# --- bad inputs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logits,labels,kwargs,error,match",
    [
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"vocab_size": 3}, ValueError,
         r"vocab_size=3 disagrees with logits of shape \[2, 3, 5\]"),
        (torch.randn(2, 3, 5), torch.zeros(6, dtype=torch.long), {}, ValueError,
         r"labels must have shape \[2, 3\].*got \[6\]"),
        (torch.randn(2, 3, 5), torch.zeros(3, 2, dtype=torch.long), {}, ValueError,
         r"labels must have shape \[2, 3\].*got \[3, 2\]"),
        (torch.randn(2, 3, 5), torch.zeros(2, 3), {}, TypeError, r"labels must hold integer token ids.*\[2, 3\]"),
        (torch.randn(2, 3, 5), torch.full((2, 3), 5), {}, ValueError,
         r"labels holds token id 5, outside \[0, 5\).*\[2, 3\]"),
        (torch.randn(5), torch.tensor(1), {}, ValueError, r"logits must be \[batch, seq, vocab\].*got shape \[5\]"),
        (torch.zeros(2, 3, 5, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), {}, TypeError,
         r"logits must be a floating-point tensor.*\[2, 3, 5\]"),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"num_items_in_batch": torch.ones(2)},
         ValueError, r"num_items_in_batch must be a single count.*\[2\]"),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"reduction": "sum"}, TypeError, "reduction"),
        (torch.randn(2, 3, 5), [[0, 1, 2]] * 2, {}, TypeError, r"labels must be a torch.Tensor, got list"),
        (torch.randn(2, 3, 5).half(), ((0, 1, 2),) * 2, {}, TypeError, r"labels must be a torch.Tensor, got tuple"),
    ],
)
def test_bad_inputs_name_the_argument_and_shape(logits, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        masked_lm_loss(logits, labels, **kwargs)


def test_flattened_labels_that_upstream_accepts_are_refused(hf_loss_utils):
    logits, labels = _inputs(9, (2, 3, 5), torch.float32)
    _hf(hf_loss_utils, logits, labels.view(-1))  # upstream: silently fine
    _hf(hf_loss_utils, logits, labels.t().contiguous())  # upstream: silently pairs the wrong positions
    with pytest.raises(ValueError, match=r"got \[3, 2\]"):
        masked_lm_loss(logits, labels.t().contiguous())


@pytest.mark.parametrize("wrong", [1, 2, 3, 4, 6, 10, 15, 30, 31])
def test_a_wrong_vocab_size_never_runs_silently_upstream_with_labels_of_the_right_shape(hf_loss_utils, wrong):
    # view(-1, vocab_size) makes logits.numel() / vocab_size rows for labels.numel() labels: equal only for 5
    logits, labels = _inputs(9, (2, 3, 5), torch.float32)
    with pytest.raises((ValueError, RuntimeError)):
        hf_loss_utils.ForMaskedLMLoss(logits, labels, wrong)
    with pytest.raises(ValueError, match=rf"vocab_size={wrong} disagrees"):
        masked_lm_loss(logits, labels, vocab_size=wrong)


# --- mask_tokens ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("probs", [(0.15, 0.8, 0.1), (0.5, 0.5, 0.4), (0.3, 1.0, 0.0), (0.2, 0.0, 1.0),
                                   (0.25, 0.6, 0.0), (1.0, 0.0, 0.0), (0.0, 0.8, 0.1)], ids=str)
def test_mask_tokens_equals_the_transformers_collator(tok, seed, probs):
    require("tokenizers", "needed to build the collator's tokenizer in memory")
    p, m, r = probs
    collator = demo.transformers_collator(tok, seed=seed, mlm_probability=p, mask_replace_prob=m,
                                          random_replace_prob=r)
    g = torch.Generator().manual_seed(100 + seed)
    ids = torch.randint(2, tok.vocab_size, (5, 37), generator=g)
    ids[2, 20:] = tok.pad_id  # padding: special, never selected
    ids[4, 3] = tok.mask_id  # a stray <mask> in the text: special too
    generator = torch.Generator().manual_seed(seed)
    for _ in range(2):  # the second call continues both random streams
        batch = collator([row.tolist() for row in ids])
        inputs, labels = mask_tokens(ids, tok.mask_id, tok.vocab_size, p, tok.special_ids, generator, m, r)
        assert torch.equal(inputs, batch["input_ids"]) and torch.equal(labels, batch["labels"])


def test_mask_tokens_statistics(tok):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, tok.vocab_size, (200, 500), generator=g)  # 100,000 tokens
    ids[:, -50:] = tok.pad_id  # 10% padding
    before = ids.clone()
    inputs, labels, masking = mask_tokens(ids, tok.mask_id, tok.vocab_size, 0.15, tok.special_ids, g,
                                          return_masking=True)
    assert torch.equal(ids, before)  # the caller's tensor is untouched
    special = ids == tok.pad_id
    assert not masking.selected[special].any()  # specials are never selected
    assert torch.equal(labels == -100, ~masking.selected)  # -100 exactly where not selected
    assert torch.equal(labels[masking.selected], ids[masking.selected])  # the original token elsewhere
    assert torch.equal(inputs[~masking.selected], ids[~masking.selected])  # unselected inputs unchanged
    assert (inputs[masking.replaced] == tok.mask_id).all()
    assert torch.equal(inputs[masking.unchanged], ids[masking.unchanged])
    n = int((~special).sum())
    selected = int(masking.selected.sum())
    # binomial standard deviations: sqrt(n p (1-p)) / n ~ 0.0012 for the selection; 5 sigma tolerances
    assert abs(selected / n - 0.15) < 5 * (0.15 * 0.85 / n) ** 0.5
    for part, share in ((masking.replaced, 0.8), (masking.randomized, 0.1), (masking.unchanged, 0.1)):
        assert abs(int(part.sum()) / selected - share) < 5 * (share * (1 - share) / selected) ** 0.5
    random_ids = inputs[masking.randomized]
    assert random_ids.min() >= 0 and random_ids.max() < tok.vocab_size
    # the random draw covers the whole vocabulary, specials included, as upstream's len(tokenizer)
    assert len(set(masking.random_ids.flatten().tolist())) == tok.vocab_size


def test_mask_tokens_global_rng_is_seeded_by_torch_manual_seed(tok):
    ids = torch.randint(2, tok.vocab_size, (3, 20))
    torch.manual_seed(5)
    first = mask_tokens(ids, tok.mask_id, tok.vocab_size)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(first, mask_tokens(ids, tok.mask_id, tok.vocab_size)))


def test_special_tokens_mask_and_ignore_index(tok):
    ids = torch.randint(2, tok.vocab_size, (2, 30))
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[:, :10] = True
    _, labels, m = mask_tokens(ids, tok.mask_id, tok.vocab_size, 1.0, special_tokens_mask=mask, ignore_index=-1,
                               return_masking=True)
    assert not m.selected[:, :10].any() and m.selected[:, 10:].all()
    assert (labels[:, :10] == -1).all()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"mlm_probability": 1.5}, ValueError, r"mlm_probability must be a probability in \[0, 1\], got 1.5"),
        ({"mask_replace_prob": 0.8, "random_replace_prob": 0.3}, ValueError, "must not exceed 1"),
        ({"mask_token_id": 58}, ValueError, r"mask_token_id=58 is outside \[0, 58\)"),
        ({"ignore_index": 3}, ValueError, "ignore_index=3 is a token id"),
        ({"special_tokens_mask": torch.zeros(3, dtype=torch.bool)}, ValueError,
         r"special_tokens_mask must be a tensor of the shape of input_ids \[2, 4\], got \[3\]"),
    ],
)
def test_mask_tokens_bad_arguments(tok, kwargs, error, match):
    args = {"input_ids": torch.full((2, 4), 5), "mask_token_id": tok.mask_id, "vocab_size": tok.vocab_size}
    with pytest.raises(error, match=match):
        mask_tokens(**{**args, **kwargs})


def test_mask_tokens_bad_ids():
    with pytest.raises(ValueError, match=r"input_ids holds token id 9, outside \[0, 9\).*\[1, 3\]"):
        sample_masking(torch.tensor([[1, 9, 2]]), 9)
    with pytest.raises(TypeError, match=r"input_ids must hold integer token ids.*\[1, 3\]"):
        sample_masking(torch.tensor([[1.0, 2.0, 3.0]]), 9)


# --- the bug zoo ------------------------------------------------------------------------------------------------


def _hf_mask_then_score(hf_loss_utils, tok):
    def reference(logits, input_ids, seed, mask_token_id, vocab_size, special_ids=(), mlm_probability=0.15):
        collator = demo.transformers_collator(tok, seed=seed, mlm_probability=mlm_probability)
        labels = collator([row.tolist() for row in input_ids])["labels"]
        return hf_loss_utils.ForMaskedLMLoss(logits, labels, vocab_size)

    return reference


def test_mask_then_score_equals_transformers_pipeline(hf_loss_utils, tok):
    require("tokenizers", "needed to build the collator's tokenizer in memory")
    result = compare_losses(mask_then_score, _hf_mask_then_score(hf_loss_utils, tok), demo.masking_cases(tok),
                            atol=0.0)
    assert result.passed, result


@pytest.mark.parametrize("bug", [getattr(zoo, name) for name in zoo.__all__], ids=zoo.__all__)
def test_every_exhibit_fails_the_check(tok, bug):
    cases = demo.masking_cases(tok)
    assert compare_losses(mask_then_score, mask_then_score, cases).passed
    result = compare_losses(bug, mask_then_score, cases)
    assert not result.passed and result.value_error > 1e-3, result


def test_scoring_every_position_rewards_copying(tok):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, tok.vocab_size, (4, 40), generator=g)
    inputs, _ = mask_tokens(ids, tok.mask_id, tok.vocab_size, 0.15, tok.special_ids, torch.Generator().manual_seed(2))
    copier = 10 * torch.nn.functional.one_hot(inputs, tok.vocab_size).float()  # predicts its own input
    args = dict(input_ids=ids, seed=2, mask_token_id=tok.mask_id, vocab_size=tok.vocab_size,
                special_ids=tok.special_ids)
    assert zoo.scores_every_position(copier, **args) < 2.0 < mask_then_score(copier, **args)


# --- widget -----------------------------------------------------------------------------------------------------


def test_masking_explorer_shows_lossbooks_numbers():
    ex = MaskingExplorer(text="Jack and Jill", padding=2)
    for p, seed in ((0.5, 3), (0.3, 11)):
        ex.probability.value = p
        ex.seed.value = seed
        g = torch.Generator().manual_seed(seed)
        tok = ex.tokenizer
        inputs, labels = mask_tokens(ex.ids, tok.mask_id, tok.vocab_size, p, tok.special_ids, g)
        assert torch.equal(ex.inputs, inputs) and torch.equal(ex.labels, labels)
        logits = ex.logits.clone().requires_grad_(True)
        loss = masked_lm_loss(logits, labels)
        loss.backward()
        assert ex.loss == pytest.approx(loss.item(), rel=1e-7)
        assert f">{loss.item():.4f}<" in ex.html.value
        torch.testing.assert_close(ex.grad, logits.grad[0])
        assert (torch.tensor(ex.grad_norms)[labels[0] == -100] == 0).all()
        assert labels[0, -2:].eq(-100).all()  # the pads are never selected
        kept = int((labels != -100).sum())
        assert f"selected {kept} of 13 ordinary tokens" in ex.html.value


def test_masking_explorer_legend_is_escaped_and_labels_read_as_characters():
    import re

    ex = MaskingExplorer(text="Jack and Jill", padding=2, mlm_probability=0.5, seed=3)
    html_text = ex.html.value
    assert "<mask>" not in html_text  # an unescaped <mask> is an (empty) HTML tag: the legend chip was blank
    legend = html_text.split("<p", 1)[1]
    assert ">&lt;mask&gt;</span>" in legend
    label_row = re.search(r"<tr><th>label</th>(.*?)</tr>", html_text).group(1)
    cells = re.findall(r'<td title="([^"]*)"[^>]*>(.*?)</td>', label_row)
    tok = ex.tokenizer
    for (title, shown), y in zip(cells, ex.labels[0].tolist(), strict=True):
        if y == -100:
            assert "-100" in shown
        else:
            char = tok.vocab[y]
            assert title == f"label id {y}"
            assert shown == {" ": "&#9251;", "\n": "&#8629;"}.get(char, char)


def test_masking_explorer_nothing_selected_says_why_it_is_nan():
    ex = MaskingExplorer(mlm_probability=0.0)
    assert "0/0" in ex.html.value and ex.loss != ex.loss


# --- demo helpers -------------------------------------------------------------------------------------------------


def test_split_is_disjoint_and_deterministic():
    split = demo.split_rhymes()
    assert 0 < split.held_out_ids.numel() < split.train_ids.numel()
    text = load_text("nursery_rhymes")
    train_text = split.tokenizer.decode(split.train_ids)
    for rhyme in split.held_out_rhymes:
        assert rhyme in text and rhyme not in train_text
    assert torch.equal(demo.split_rhymes().train_ids, split.train_ids)


def test_mlm_batch_and_eval_set(tok):
    split = demo.split_rhymes()
    a = demo.mlm_batch(split.train_ids, split.tokenizer, 8, 32, torch.Generator().manual_seed(0))
    b = demo.mlm_batch(split.train_ids, split.tokenizer, 8, 32, torch.Generator().manual_seed(0))
    assert a[0].shape == a[1].shape == (8, 32) and all(torch.equal(x, y) for x, y in zip(a, b))
    ev = demo.make_eval_set(split.held_out_ids, split.tokenizer, 32, repeats=2)
    assert ev.inputs.shape[1] == 32 and ev.inputs.shape[0] == 2 * (split.held_out_ids.numel() // 32)
    assert torch.equal(ev.labels, demo.make_eval_set(split.held_out_ids, split.tokenizer, 32, repeats=2).labels)
    majority, acc = demo.majority_baseline(split.train_ids, ev)
    assert split.tokenizer.vocab[majority] == " " and 0 < acc < 0.5


class _Oracle(torch.nn.Module):
    """Knows the original windows: logits = 10 * onehot(truth)."""

    def __init__(self, truth, vocab):
        super().__init__()
        self.truth, self.vocab = truth, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, inputs):  # evaluated in one chunk: row i of inputs is window i
        return 10 * torch.nn.functional.one_hot(self.truth[: inputs.shape[0]], self.vocab).float()


def test_masked_accuracy_of_an_oracle_and_of_a_tiny_model(tok):
    split = demo.split_rhymes()
    ev = demo.make_eval_set(split.held_out_ids, split.tokenizer, 32, repeats=1)
    truth = torch.where(ev.labels != -100, ev.labels, ev.inputs)  # the original windows
    oracle = _Oracle(truth, split.tokenizer.vocab_size)
    assert demo.masked_accuracy(oracle, ev, batch_size=10_000) == 1.0
    assert demo.masked_accuracy(oracle, ev, where="scored", batch_size=10_000) == 1.0
    torch.manual_seed(0)
    model = TinyTransformer(split.tokenizer.vocab_size, 16, 2, 1, 32, causal=False)
    assert 0.0 <= demo.masked_accuracy(model, ev) <= 1.0
    masked, rows = demo.fill_masks(model, split.tokenizer, "Jack and Jill", [1, 5], k=3)
    assert masked == "J_ck _nd Jill" and [r[1] for r in rows] == ["a", "a"]
    assert all(len(r[2]) == 3 and sum(p for _, p in r[2]) <= 1.0 for r in rows)


def test_loss_cases_cover_the_edges():
    cases = demo.loss_cases(0)
    shapes = [tuple(c["logits"].shape) for c in cases]
    assert (1, 1, 5) in shapes and any(s[0] > 1 for s in shapes)
    assert any(((c["labels"] == -100).all(-1)).any() for c in cases)  # a row with nothing to score


# ---- hardening: narrow id dtypes and special_ids


def test_labels_are_long_so_ignore_index_cannot_wrap_in_a_narrow_dtype():
    ids = torch.randint(0, 10, (4, 12), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    before = ids.clone()
    inputs, labels = mask_tokens(ids, 3, 10, mlm_probability=0.5, generator=torch.Generator().manual_seed(1))
    assert labels.dtype == torch.long and inputs.dtype == torch.uint8
    assert set(labels.unique().tolist()) - set(range(10)) == {-100}  # in uint8, -100 would read as token 156
    assert torch.equal(ids, before)  # the caller's ids are untouched
    long_inputs, long_labels = mask_tokens(ids.long(), 3, 10, mlm_probability=0.5,
                                           generator=torch.Generator().manual_seed(1))
    assert torch.equal(labels, long_labels) and torch.equal(inputs.long(), long_inputs)  # same masking


def test_a_vocabulary_the_id_dtype_cannot_hold_is_an_error():
    ids = torch.randint(0, 100, (2, 6), dtype=torch.int8)
    with pytest.raises(ValueError, match=r"input_ids of dtype torch.int8 \(largest value 127\) cannot hold .*300"):
        mask_tokens(ids, 3, 300, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("special_ids", [None, 5, "ab", [1.5]])
def test_special_ids_must_be_token_ids(special_ids):
    with pytest.raises(TypeError, match="special_ids must"):
        mask_tokens(torch.randint(0, 10, (2, 6)), 3, 10, special_ids=special_ids)


# --- the demo's three-way split, the bug it trains, its metrics and baselines (second edition) ------------------


def test_three_way_split_is_disjoint_and_its_test_set_is_split_rhymes_held_out():
    splits = demo.split_rhymes_three_way()
    old = demo.split_rhymes()
    assert torch.equal(splits.test_ids, old.held_out_ids)
    text = splits.tokenizer.decode
    train, val, test = text(splits.train_ids), text(splits.validation_ids), text(splits.test_ids)
    for held in (val, test):
        for rhyme in held.split("\n\n"):
            assert rhyme not in train
    assert not set(val.split("\n\n")) & set(test.split("\n\n"))
    assert splits.validation_ids.numel() > 500 and splits.train_ids.numel() > 4 * splits.test_ids.numel() - 1000
    with pytest.raises(ValueError, match="validation_offset and test_offset must differ"):
        demo.split_rhymes_three_way(validation_offset=3, test_offset=3)


def test_mlm_batch_scoring_every_position_keeps_the_inputs_and_labels_everything(tok):
    ids = demo.split_rhymes().train_ids
    fix = demo.mlm_batch(ids, tok, 8, 32, torch.Generator().manual_seed(5))
    bug = demo.mlm_batch(ids, tok, 8, 32, torch.Generator().manual_seed(5), score_every_position=True)
    windows = torch.where(fix[1] != -100, fix[1], fix[0])  # unselected positions show the original
    assert torch.equal(fix[0], bug[0])  # the same corrupted inputs
    assert (bug[1] != -100).all() and torch.equal(bug[1], windows)
    assert (fix[1] == -100).float().mean() > 0.7


def test_accuracy_by_fate_of_an_oracle_and_of_a_copier(tok):
    split = demo.split_rhymes()
    ev = demo.make_eval_set(split.held_out_ids, tok, 32, repeats=2)
    truth = torch.where(ev.labels != -100, ev.labels, ev.inputs)
    oracle = demo.accuracy_by_fate(_Oracle(truth, tok.vocab_size), ev, batch_size=10_000)
    assert oracle["<mask>"] == oracle["wrong"] == oracle["right"] == 1.0
    assert oracle["wrong: copies it"] == 0.0  # a wrong input is never the original
    copier = demo.accuracy_by_fate(_Oracle(ev.inputs, tok.vocab_size), ev, batch_size=10_000)
    assert copier["<mask>"] == 0.0 and copier["right"] == 1.0 and copier["wrong: copies it"] == 1.0
    assert copier["wrong"] == 0.0


def test_shown_fates_split_the_scored_positions_by_what_the_input_shows():
    # a vocabulary of four (0 pad, 1 mask, 2 and 3 letters): random draws often hit <mask> or the original
    ids = torch.randint(2, 4, (40, 30), generator=torch.Generator().manual_seed(0))
    inputs, labels, m = mask_tokens(ids, 1, 4, 0.9, (0, 1), torch.Generator().manual_seed(1), 0.2, 0.7,
                                    return_masking=True)
    fates = demo.shown_fates(m, ids, 1)
    scored = labels != -100
    assert (fates["<mask>"].int() + fates["wrong"].int() + fates["right"].int() == scored.int()).all()
    assert torch.equal(fates["<mask>"], scored & (inputs == 1))
    assert torch.equal(fates["right"], scored & (inputs == ids))
    assert torch.equal(fates["wrong"], scored & (inputs != 1) & (inputs != ids))
    drawn = m.randomized & (m.random_ids == 1)
    assert drawn.any() and (m.randomized & (m.random_ids == ids)).any()  # both corner cases occur
    assert fates["<mask>"][drawn].all() and not fates["wrong"][drawn].any()


def test_context_count_baseline_reads_both_neighbours(tok):
    # a line repeated: most blanks are fixed by their two neighbours (not all: a neighbour may be masked too)
    ids = tok.encode("Jack and Jill went up the hill\n" * 20)
    ev = demo.make_eval_set(ids, tok, 31, repeats=4, seed=1)
    assert demo.context_count_baseline(ids, ev) > 0.75
    shuffled = ids[torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(0))]
    assert demo.context_count_baseline(shuffled, ev) < demo.context_count_baseline(ids, ev) - 0.3
    splits = demo.split_rhymes_three_way()
    ev = demo.make_eval_set(splits.test_ids, tok, 32, repeats=4)
    _, majority = demo.majority_baseline(splits.train_ids, ev)
    assert demo.context_count_baseline(splits.train_ids, ev) > majority + 0.1
    assert 0.2 < demo.context_count_baseline(splits.train_ids, ev, where="wrong") < 0.6  # never reads the input
    with pytest.raises(ValueError, match="where must be"):
        demo.context_count_baseline(splits.train_ids, ev, where="random")


def test_unigram_entropy():
    assert demo.unigram_entropy(torch.arange(8).repeat(5)) == pytest.approx(float(torch.log(torch.tensor(8.0))))
    assert demo.unigram_entropy(torch.tensor([3, 3, 3])) == 0.0
    assert demo.unigram_entropy(torch.tensor([0, 0, 0, 1])) == pytest.approx(0.5623351446, rel=1e-9)


def test_keep_best_restores_the_best_weights():
    model = torch.nn.Linear(2, 1)
    scores = iter([0.2, 0.7, 0.5])
    keep = demo.KeepBest(lambda m: next(scores), name="val")
    with pytest.raises(RuntimeError, match="before any evaluation"):
        keep.restore(model, 10, 30)
    snapshots = []
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        snapshots.append(model.weight.detach().clone())
        assert set(keep(model)) == {"val"}
    assert keep.restore(model, 10, 30) == 20 and torch.equal(model.weight, snapshots[1])
    assert demo.KeepBest is lossbook.selection.KeepBest


def test_keep_best_minimises_when_asked_and_refuses_other_modes():
    model = torch.nn.Linear(2, 1)
    scores = iter([0.9, 0.4, 0.6])
    keep = lossbook.selection.KeepBest(lambda m: next(scores), mode="min")
    for _ in range(3):
        keep(model)
    assert keep.best == 0.4 and keep.restore(model, 50, 120) == 100
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        lossbook.selection.KeepBest(lambda m: 0.0, mode="best")


def _verdicts(check, answer, capsys):
    out = []
    for _ in range(2):  # the same verdict when run twice
        check(answer)
        out.append(capsys.readouterr().out)
    assert out[0] == out[1]
    return out[0]


def test_exercise_checks_accept_right_answers_and_fail_wrong_ones(capsys):
    assert "not attempted" in _verdicts(demo.check_mask_share, ..., capsys)
    assert ": correct" in _verdicts(demo.check_mask_share, sp.Rational(40, 57), capsys)
    assert ": correct" in _verdicts(demo.check_mask_share, 40 / 57, capsys)
    assert "not yet" in _verdicts(demo.check_mask_share, sp.Rational(7, 10), capsys)
    assert "not yet" in _verdicts(demo.check_mask_share, 2, capsys)

    def right(ids, special_ids, p):
        return p * int((~torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))).sum())

    assert ": correct" in _verdicts(demo.check_expected_scored, right, capsys)
    assert "not yet" in _verdicts(demo.check_expected_scored, lambda ids, s, p: p * ids.numel(), capsys)
    assert "raised" in _verdicts(demo.check_expected_scored, lambda ids: 0, capsys)

    def fates(inputs, labels, mask_id):
        scored = labels != -100
        shows_mask, shows_right = scored & (inputs == mask_id), scored & (inputs == labels)
        return shows_mask, scored & ~shows_mask & ~shows_right, shows_right

    def changed_is_wrong(inputs, labels, mask_id):
        scored = labels != -100
        return scored & (inputs == mask_id), scored & (inputs != labels), scored & (inputs == labels)

    assert "not attempted" in _verdicts(demo.check_input_fates, ..., capsys)
    assert ": correct" in _verdicts(demo.check_input_fates, fates, capsys)
    assert "not yet" in _verdicts(demo.check_input_fates, changed_is_wrong, capsys)
    assert "three tensors" in _verdicts(demo.check_input_fates, lambda i, y, m: (i == m, i != m), capsys)
    assert "raised" in _verdicts(demo.check_input_fates, lambda i: 0, capsys)
