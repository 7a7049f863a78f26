
"""token_classification_loss against transformers' ForTokenClassification, sympy and autograd; chapter 05's
derivations, demo helpers, widget and bug zoo."""

import inspect
from types import SimpleNamespace

import pytest
import sympy as sp
import torch

from lossbook import LOSS_MAPPING, fixed_cross_entropy, token_classification_loss
from lossbook.bugzoo import token_classification as zoo
from lossbook.checks import compare_losses
from lossbook.demos import token_classification as demo
from lossbook.derivations import token_classification as dtc
from lossbook.widgets.token_classification import EXAMPLE_SENTENCES, AlignmentExplorer

DTYPES = {torch.float32: 1e-6, torch.bfloat16: 0.0, torch.float16: 0.0}  # half: upcast, then the same kernel


def hf_token_loss(hf_loss_utils):
    """Upstream with ``config.num_labels`` as an argument (upstream reads nothing else from the config)."""

    def fn(logits, labels, num_labels, **kwargs):
        return hf_loss_utils.ForTokenClassification(logits, labels, SimpleNamespace(num_labels=num_labels), **kwargs)

    return fn


def _inputs(seed, batch, seq, classes, dtype=torch.float32, ignored=0.3, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(batch, seq, classes, generator=g)).to(dtype)  # [batch, seq, classes]
    labels = torch.randint(0, classes, (batch, seq), generator=g)  # [batch, seq]
    labels[torch.rand(batch, seq, generator=g) < ignored] = -100
    return logits, labels


def _value_and_grad(fn, logits, labels, *args, **kwargs):
    leaf = logits.detach().clone().requires_grad_(True)
    loss = fn(leaf, labels, *args, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad


# ---- parity with transformers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch,seq,classes", [(1, 1, 2), (1, 7, 5), (3, 1, 4), (4, 9, 9), (2, 16, 3)])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("num_items", [None, 11, "tensor"])
def test_parity_with_transformers(hf_loss_utils, seed, batch, seq, classes, dtype, num_items):
    logits, labels = _inputs(seed, batch, seq, classes, dtype)
    if num_items == "tensor":
        num_items = torch.tensor(batch * seq + 2)
    ours = _value_and_grad(token_classification_loss, logits, labels, classes, num_items_in_batch=num_items)
    theirs = _value_and_grad(hf_token_loss(hf_loss_utils), logits, labels, classes, num_items_in_batch=num_items)
    assert ours[0].dtype == theirs[0].dtype == torch.float32  # the upcast
    assert ours[1].dtype == theirs[1].dtype == dtype
    tol = DTYPES[dtype]
    torch.testing.assert_close(ours[0], theirs[0], atol=tol, rtol=tol, equal_nan=True)
    torch.testing.assert_close(ours[1], theirs[1], atol=tol, rtol=tol)


@pytest.mark.parametrize("ignore_index", [-100, 0, 3, -1])
def test_parity_for_other_ignore_index(hf_loss_utils, ignore_index):
    logits, labels = _inputs(4, 3, 6, 5, ignored=0.0)
    labels[:, ::2] = ignore_index
    ours = _value_and_grad(token_classification_loss, logits, labels, 5, ignore_index=ignore_index)
    theirs = _value_and_grad(hf_token_loss(hf_loss_utils), logits, labels, 5, ignore_index=ignore_index)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("num_items", [None, 5, "tensor"])
def test_all_ignored_matches_upstream(hf_loss_utils, num_items):
    logits, _ = _inputs(0, 2, 4, 3)
    labels = torch.full((2, 4), -100)
    if num_items == "tensor":
        num_items = torch.tensor(5)
    ours = _value_and_grad(token_classification_loss, logits, labels, 3, num_items_in_batch=num_items)
    theirs = _value_and_grad(hf_token_loss(hf_loss_utils), logits, labels, 3, num_items_in_batch=num_items)
    if num_items is None:  # documented: 0/0 = NaN, gradient zero
        assert torch.isnan(ours[0]) and torch.isnan(theirs[0])
    else:
        assert ours[0].item() == theirs[0].item() == 0.0
    assert torch.equal(ours[1], torch.zeros_like(ours[1])) and torch.equal(ours[1], theirs[1])


def test_other_leading_shapes_and_extreme_logits_match_upstream(hf_loss_utils):
    hf = hf_token_loss(hf_loss_utils)
    cases = [
        (torch.randn(6, 4), torch.tensor([0, 3, -100, 1, 2, 2])),  # [batch, classes]: one tag per sequence
        (torch.randn(4), torch.tensor(2)),  # one token
        (torch.randn(2, 3, 2, 4), torch.randint(0, 4, (2, 3, 2))),  # extra leading dim
        (torch.tensor([[[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0]]]), torch.tensor([[1, 0]])),
        (torch.randn(0, 5, 3), torch.zeros(0, 5, dtype=torch.long)),  # empty batch: every label "ignored"
    ]
    for logits, labels in cases:
        ours = _value_and_grad(token_classification_loss, logits, labels, logits.shape[-1])
        theirs = _value_and_grad(hf, logits, labels, logits.shape[-1])
        torch.testing.assert_close(ours, theirs, equal_nan=True)
    assert ours[0].isnan()  # the empty batch, as upstream


def test_label_smoothing_and_extra_model_kwargs(hf_loss_utils):
    logits, labels = _inputs(1, 2, 5, 4)
    # models forward their own keywords to the loss; both ignore the unknown ones
    extra = {"attention_mask": torch.ones(2, 5), "output_attentions": False}
    torch.testing.assert_close(
        token_classification_loss(logits, labels, 4, **extra), hf_token_loss(hf_loss_utils)(logits, labels, 4, **extra)
    )
    # documented difference: label_smoothing is honoured (upstream drops it)
    ours = token_classification_loss(logits, labels, 4, label_smoothing=0.1)
    expected = fixed_cross_entropy(logits.view(-1, 4), labels.view(-1), label_smoothing=0.1)
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(ours, hf_token_loss(hf_loss_utils)(logits, labels, 4, label_smoothing=0.1))


def test_float64_stays_float64_and_agrees_to_float32_rounding(hf_loss_utils):
    logits, labels = _inputs(2, 3, 7, 5, torch.float64)
    ours = _value_and_grad(token_classification_loss, logits, labels, 5)
    theirs = _value_and_grad(hf_token_loss(hf_loss_utils), logits, labels, 5)
    assert ours[0].dtype == torch.float64 and theirs[0].dtype == torch.float32  # documented difference
    torch.testing.assert_close(ours[0].float(), theirs[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-7, rtol=1e-6)
    exact = fixed_cross_entropy(logits.view(-1, 5), labels.view(-1))  # float64 all the way
    assert ours[0].item() == exact.item()


def test_non_contiguous_logits_are_accepted(hf_loss_utils):
    logits, labels = _inputs(3, 5, 4, 3)
    transposed = logits.transpose(0, 1)  # [4, 5, 3] view, not contiguous
    with pytest.raises(RuntimeError):
        hf_token_loss(hf_loss_utils)(transposed, labels.T, 3)  # upstream's .view refuses
    torch.testing.assert_close(
        token_classification_loss(transposed, labels.T, 3),
        hf_token_loss(hf_loss_utils)(transposed.contiguous(), labels.T.contiguous(), 3),
    )


def test_loss_mapping_points_here():
    """The map's entry takes transformers' calling convention (``config``) and calls this loss (issue 29)."""
    from lossbook import loss_mapping

    assert LOSS_MAPPING["ForTokenClassification"] is loss_mapping.token_classification_entry
    assert "token_classification_loss(" in inspect.getsource(loss_mapping.token_classification_entry)


# ---- autograd and sympy -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_gradcheck_float64(seed):
    logits, labels = _inputs(seed, 2, 5, 4, torch.float64)
    labels[0, 0] = 1  # at least one kept token
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: token_classification_loss(z, labels, 4), (logits,))
    assert torch.autograd.gradcheck(lambda z: token_classification_loss(z, labels, 4, num_items_in_batch=13), (logits,))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("num_items", [None, 9])
def test_sympy_value_and_gradient_equal_lossbook(seed, num_items):
    batch, seq, classes = 2, 3, 3
    zs = dtc.token_logit_grid(batch, seq, classes)
    flat = [s for row in zs for z in row for s in z]
    logits, labels = _inputs(seed, batch, seq, classes, torch.float64, ignored=0.4)
    labels[1, 2] = 0  # at least one kept token
    ys = labels.tolist()
    values = logits.flatten().tolist()
    ours, grad = _value_and_grad(token_classification_loss, logits, labels, classes, num_items_in_batch=num_items)
    expected = sp.lambdify(flat, dtc.token_loss(zs, ys, num_items_in_batch=num_items))(*values)
    assert ours.item() == pytest.approx(float(expected), rel=1e-12)
    closed = dtc.token_loss_grad(zs, ys, num_items_in_batch=num_items)
    closed_flat = [g for row in closed for gz in row for g in gz]
    expected_grad = torch.tensor([float(sp.lambdify(flat, g)(*values)) for g in closed_flat], dtype=torch.float64)
    torch.testing.assert_close(grad.flatten(), expected_grad, atol=1e-12, rtol=1e-10)
    assert torch.equal(grad[labels == -100], torch.zeros_like(grad[labels == -100]))  # exactly zero


def test_sympy_gradient_is_the_closed_form():
    zs = dtc.token_logit_grid(2, 2, 3)
    ys = [[2, -100], [0, 1]]
    loss = dtc.token_loss(zs, ys)
    for zrow, grow in zip(zs, dtc.token_loss_grad(zs, ys)):
        for z, g in zip(zrow, grow):
            for zi, gi in zip(z, g):
                assert sp.simplify(sp.diff(loss, zi) - gi) == 0
    wrong = [[[gi * 2 for gi in g] for g in row] for row in dtc.token_loss_grad(zs, ys)]  # the check can fail
    assert sp.simplify(sp.diff(loss, zs[0][0][0]) - wrong[0][0][0]) != 0


def test_shared_denominator_makes_micro_batches_add_up():
    zs = dtc.token_logit_grid(2, 3, 2)
    ys = [[0, -100, -100], [1, 0, 1]]  # 1 and 3 kept tokens
    n = dtc.kept_count(ys)
    full = dtc.token_loss(zs, ys)
    shared = dtc.token_loss(zs[:1], ys[:1], num_items_in_batch=n) + dtc.token_loss(zs[1:], ys[1:], num_items_in_batch=n)
    assert sp.simplify(full - shared) == 0
    assert sp.simplify(full - dtc.per_sentence_mean_of_means(zs, ys)) != 0


def test_word_weights_are_what_the_loss_does():
    assert dtc.word_weights([1, 3, 2]) == [sp.Rational(1, 3)] * 3
    weights = dtc.word_weights([1, 3, 2], label_all_tokens=True)
    assert weights == [sp.Rational(1, 6), sp.Rational(1, 2), sp.Rational(1, 3)]
    # numerically: give every piece of a word the same logits; labelling every piece weights words by length
    tokenizer = demo.SubwordTokenizer(demo.all_words())
    words, tags = "Srinivasa met Ada".split(), [1, 0, 1]
    pieces, word_ids = tokenizer(words, add_special_tokens=False)
    g = torch.Generator().manual_seed(0)
    per_word = torch.randn(len(words), len(demo.TAGS), generator=g, dtype=torch.float64)
    logits = per_word[torch.tensor(word_ids)].unsqueeze(0)  # [1, pieces, tags]
    word_ce = torch.nn.functional.cross_entropy(per_word, torch.tensor(tags), reduction="none")
    for every in (False, True):  # the copy keeps one label per word, so each piece's term is its word's
        labels = torch.tensor([demo.align_labels(tags, word_ids, label_all_tokens=every, b_to_i=None)])
        w = torch.tensor([float(x) for x in dtc.word_weights([word_ids.count(i) for i in range(3)], every)])
        assert token_classification_loss(logits, labels, 5).item() == pytest.approx(float((w * word_ce).sum()))


# ---- bad input ----------------------------------------------------------------------------------------------------


def _idx(*shape):
    return torch.zeros(*shape, dtype=torch.long)


@pytest.mark.parametrize(
    "logits,labels,num_labels,kwargs,error,message",
    [
        (torch.randn(2, 3, 6), _idx(2, 3), 3, {}, ValueError, r"end in num_labels=3.*got shape \[2, 3, 6\]"),
        (torch.randn(2, 3, 5), _idx(2, 3), 3, {}, ValueError, r"num_labels=3.*\[2, 3, 5\]"),
        (torch.randn(2, 3, 5), _idx(3, 2), 5, {}, ValueError, r"labels must have shape \[2, 3\].*got \[3, 2\]"),
        (torch.randn(2, 3, 5), _idx(6), 5, {}, ValueError, r"labels must have shape \[2, 3\].*got \[6\]"),
        (torch.randn(2, 3, 5), _idx(2, 3, 1), 5, {}, ValueError, r"got \[2, 3, 1\]"),
        (torch.randn(2, 3, 5), torch.zeros(2, 3), 5, {}, TypeError, r"labels must hold integer .*shape \[2, 3\]"),
        (torch.randn(2, 3, 5), _idx(2, 3).bool(), 5, {}, TypeError, r"labels must hold integer"),
        (_idx(2, 3, 5), _idx(2, 3), 5, {}, TypeError, r"logits must be a floating.*\[2, 3, 5\]"),
        (torch.tensor(1.0), torch.tensor(0), 1, {}, ValueError, r"logits must be .*got shape \[\]"),
        (
            torch.randn(2, 3, 5),
            torch.tensor([[0, 1, 5], [0, 0, 0]]),
            5,
            {},
            ValueError,
            r"labels holds tag 5, outside \[0, 5\).*\[2, 3\]",
        ),
        (torch.randn(2, 3, 5), torch.tensor([[0, 1, -1], [0, 0, 0]]), 5, {}, ValueError, r"labels holds tag -1"),
        (torch.randn(2, 3, 5), _idx(2, 3), 5.0, {}, TypeError, r"num_labels must be a positive int"),
        (torch.randn(2, 3, 5), _idx(2, 3), True, {}, TypeError, r"num_labels must be a positive int"),
        (torch.randn(2, 3, 5), _idx(2, 3), SimpleNamespace(num_labels=5), {}, TypeError, r"config.num_labels"),
        (torch.randn(2, 3, 5), _idx(2, 3), 5, {"reduction": "sum"}, TypeError, r"num_items_in_batch"),
        (torch.randn(2, 3, 5), _idx(2, 3), 5, {"num_items_in_batch": torch.ones(2)}, ValueError, r"shape \[2\]"),
        (torch.randn(2, 3, 5), [[0, 1, 2]] * 2, 5, {}, TypeError, r"labels must be a torch.Tensor, got list"),
    ],
)
def test_bad_input_names_argument_and_shape(logits, labels, num_labels, kwargs, error, message):
    with pytest.raises(error, match=message):
        token_classification_loss(logits, labels, num_labels, **kwargs)


def test_upstream_silently_regroups_what_lossbook_refuses(hf_loss_utils):
    logits, labels = torch.randn(2, 3, 6), torch.zeros(2, 6, dtype=torch.long)  # 6 logits per token, "3 tags"
    value = hf_token_loss(hf_loss_utils)(logits, labels, 3)  # upstream: 12 rows of 3, no error
    assert torch.isfinite(value)
    with pytest.raises(ValueError, match="num_labels=3"):
        token_classification_loss(logits, labels, 3)


# ---- bug zoo ------------------------------------------------------------------------------------------------------

BUGS = [
    zoo.scores_padding_as_tag_0,
    zoo.shifted_like_causal_lm,
    zoo.per_sentence_mean_of_means,
]


@pytest.mark.parametrize("seed", [0, 1])
def test_lossbook_passes_the_check_on_the_zoo_cases(hf_loss_utils, seed):
    for dtype in (torch.float32, torch.bfloat16):
        cases = zoo.token_classification_cases(seed, dtype=dtype)
        result = compare_losses(token_classification_loss, hf_token_loss(hf_loss_utils), cases, atol=0.0)
        assert result.passed, result


@pytest.mark.parametrize("bug", BUGS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_bug_fails_against_lossbook(bug, seed):
    result = compare_losses(bug, token_classification_loss, zoo.token_classification_cases(seed))
    assert not result.passed, result


def test_label_all_tokens_loss_is_encode_batch_with_b_to_i_and_the_copy_bug_is_not():
    tokenizer = demo.SubwordTokenizer(demo.all_words())
    sentences = demo.make_tagged_sentences(5, seed=3)
    first = demo.encode_batch(sentences, tokenizer)
    every = demo.encode_batch(sentences, tokenizer, label_all_tokens=True)
    copied = demo.encode_batch(sentences, tokenizer, label_all_tokens=True, b_to_i=None)
    logits = torch.randn(*first["labels"].shape, 5)
    torch.testing.assert_close(
        zoo.label_all_tokens_loss(logits, first["labels"], 5, word_ids=first["word_ids"]),
        token_classification_loss(logits, every["labels"], 5),
    )
    torch.testing.assert_close(
        zoo.copies_b_onto_continuations(logits, first["labels"], 5, word_ids=first["word_ids"]),
        token_classification_loss(logits, copied["labels"], 5),
    )
    assert zoo.labels_every_subword is zoo.copies_b_onto_continuations  # the first edition's name still imports


@pytest.mark.parametrize("seed", [0, 1])
def test_copying_b_fails_against_the_documented_label_all_tokens(seed):
    cases = zoo.token_classification_cases(seed)
    assert compare_losses(zoo.label_all_tokens_loss, zoo.label_all_tokens_loss, cases).passed
    result = compare_losses(zoo.copies_b_onto_continuations, zoo.label_all_tokens_loss, cases)
    assert not result.passed, result
    # labelling every piece is an option, not the first-piece loss: the two differ on these cases
    assert not compare_losses(zoo.label_all_tokens_loss, token_classification_loss, cases).passed


# ---- demo helpers -------------------------------------------------------------------------------------------------


def test_split_word_and_tokenizer():
    assert demo.split_word("Lovelace") == ["Lov", "##ela", "##ce"]
    assert demo.split_word("in") == ["in"]
    with pytest.raises(ValueError, match="empty"):
        demo.split_word("")
    tokenizer = demo.SubwordTokenizer(demo.all_words())
    pieces, word_ids = tokenizer(["Ada", "Lovelace", "."])
    assert pieces == ["[CLS]", "Ada", "Lov", "##ela", "##ce", ".", "[SEP]"]
    assert word_ids == [None, 0, 1, 1, 1, 2, None]
    assert tokenizer.ids(["[PAD]", "zzz"]) == [tokenizer.pad_id, tokenizer.unk_id]
    assert len(set(tokenizer.vocab.values())) == len(tokenizer)


def test_align_labels_follows_the_recipe():
    word_ids = [None, 0, 1, 1, 1, 2, None, None]
    assert demo.align_labels([1, 2, 0], word_ids) == [-100, 1, 2, -100, -100, 0, -100, -100]
    # every piece: B- becomes I- on continuation pieces (run_ner.py's b_to_i_label), so decoding sees one entity
    assert demo.align_labels([1, 2, 0], word_ids, label_all_tokens=True) == [-100, 1, 2, 2, 2, 0, -100, -100]
    assert demo.align_labels([3, 1, 0], word_ids, label_all_tokens=True) == [-100, 3, 1, 2, 2, 0, -100, -100]
    # b_to_i=None copies B- verbatim: the mistake
    assert demo.align_labels([3, 1, 0], word_ids, True, b_to_i=None) == [-100, 3, 1, 1, 1, 0, -100, -100]
    with pytest.raises(ValueError, match="2 labels for the 3 words"):
        demo.align_labels([1, 2], word_ids)


def test_sentences_are_deterministic_and_bio_valid():
    a, b = demo.make_tagged_sentences(50, seed=7), demo.make_tagged_sentences(50, seed=7)
    assert a == b and a != demo.make_tagged_sentences(50, seed=8)
    for words, tags in a:
        assert len(words) == len(tags)
        for prev, tag in zip([0, *tags], tags):
            name = demo.TAGS[tag]
            if name.startswith("I-"):  # an inside tag continues a span of the same kind
                assert demo.TAGS[prev][2:] == name[2:]
    seen = {(w, demo.TAGS[t][2:]) for words, tags in a for w, t in zip(words, tags) if w in demo.AMBIGUOUS}
    assert {kind for _, kind in seen} == {"PER", "LOC"}  # ambiguous words appear as both
    for text, tags in EXAMPLE_SENTENCES:
        assert len(text.split()) == len(tags)


def test_encode_batch_and_model_shapes():
    tokenizer = demo.SubwordTokenizer(demo.all_words())
    sentences = demo.make_tagged_sentences(4, seed=0)
    enc = demo.encode_batch(sentences, tokenizer)
    batch, seq = enc["input_ids"].shape
    assert all(t.shape == (batch, seq) for t in enc.values())
    assert (enc["labels"][enc["attention_mask"] == 0] == -100).all()  # padding is ignored
    assert (enc["labels"] != -100).sum(1).tolist() == [len(w) for w, _ in sentences]  # one label per word
    short = demo.encode_batch(sentences, tokenizer, max_length=5)
    assert short["input_ids"].shape == (4, 5)
    torch.manual_seed(0)
    model = demo.TokenTagger(len(tokenizer), len(demo.TAGS))
    assert model(enc["input_ids"]).shape == (batch, seq, len(demo.TAGS))


def test_per_tag_accuracy():
    labels = torch.tensor([[0, 1, -100, 2], [3, 0, -100, -100]])
    pred = torch.tensor([[0, 1, 4, 0], [3, 1, 0, 0]])
    logits = torch.nn.functional.one_hot(pred, 5).float()
    per_tag, overall = demo.per_tag_accuracy(logits, labels, 5)
    assert per_tag[:4].tolist() == [0.5, 1.0, 0.0, 1.0] and per_tag[4].isnan()
    assert overall == pytest.approx(3 / 5)


# ---- widget -------------------------------------------------------------------------------------------------------


def test_alignment_explorer_shows_lossbook_numbers():
    ex = AlignmentExplorer(sentence=0, padding=2)
    assert ex.pieces[0] == "[CLS]" and ex.pieces[-2:] == ["[PAD]", "[PAD]"]
    assert ex.kept == len(EXAMPLE_SENTENCES[0][1])  # first pieces only
    ex.position.value = 1
    ex.tag.value = 2
    ex.logit.value = 4.0
    logits, labels = ex.tensors()
    assert logits[0, 1, 2].item() == 4.0
    leaf = logits.clone().requires_grad_(True)
    expected = token_classification_loss(leaf, labels, 5)
    expected.backward()
    assert ex.loss == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(torch.tensor(ex.grad_row, dtype=torch.float64), leaf.grad[0, 1])
    assert f">{expected.item():.4f}<" in ex.html.value
    ex.position.value = 2  # a continuation piece: ignored, gradient exactly zero
    assert labels[0, 2].item() == -100 and ex.grad_row == [0.0] * 5 and "ignored" in ex.html.value
    ex.label_all.value = True  # now it counts
    assert ex.kept > len(EXAMPLE_SENTENCES[0][1]) and any(g != 0 for g in ex.grad_row)
    ex.sentence.value = 1
    ex.padding.value = 0
    assert ex.position.max == len(ex.pieces) - 1
    ex.sentence.value = 0  # the edited logit is remembered per sentence
    assert ex.logits[0, 1, 2].item() == 4.0


# ---- entities and entity F1 ---------------------------------------------------------------------------------------


def test_bio_entities_follow_conlleval():
    assert demo.bio_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert demo.bio_entities(["B-PER", "B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1), ("PER", 2, 2)]
    assert demo.bio_entities(["O", "I-LOC", "I-LOC"]) == [("LOC", 1, 2)]  # I- after O starts an entity
    assert demo.bio_entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]  # type change: a new one
    assert demo.bio_entities([1, 2, 0, 3, 4]) == [("PER", 0, 1), ("LOC", 3, 4)]  # tag ids too
    assert demo.bio_entities([]) == [] and demo.bio_entities(["O", "O"]) == []


def test_entity_f1_counts_entities_not_words():
    gold = [[("PER", 0, 1), ("LOC", 3, 3)]]
    assert demo.entity_f1(gold, gold) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    half = demo.entity_f1(gold, [[("PER", 0, 0), ("LOC", 3, 3)]])  # 3 of 4 words right, 1 of 2 entities
    assert half == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    repeated = demo.entity_f1(gold, [[("LOC", 3, 3), ("LOC", 3, 3)]])
    assert repeated["precision"] == 0.5 and repeated["recall"] == 0.5
    assert demo.entity_f1([[]], [[]])["f1"] == 0.0
    with pytest.raises(ValueError, match="gold has 1 sentences, predicted 2"):
        demo.entity_f1(gold, [[], []])


def test_decode_entities_reads_first_pieces_or_every_piece():
    tokenizer = demo.SubwordTokenizer(demo.all_words())
    sentences = [("Srinivasa Ramanujan lives in Reykjavik .".split(), [1, 2, 0, 0, 3, 0])]
    gold = [demo.bio_entities(sentences[0][1])]
    every = demo.encode_batch(sentences, tokenizer, label_all_tokens=True)
    copied = demo.encode_batch(sentences, tokenizer, label_all_tokens=True, b_to_i=None)
    as_pred = every["labels"].clamp(min=0)  # a perfect tagger of the B->I labels
    assert demo.decode_entities(as_pred, every["word_ids"], "every") == gold
    assert demo.decode_entities(as_pred, every["word_ids"], "first") == gold
    fragments = demo.decode_entities(copied["labels"].clamp(min=0), copied["word_ids"], "every")[0]
    assert len(fragments) == 3 + 3  # "Sri" "##niv" "##asa..." and each piece of "Reykjavik"
    assert demo.entity_f1(gold, [fragments])["precision"] == pytest.approx(2 / 6)  # both found, 4 fragments extra
    with pytest.raises(ValueError, match="reading"):
        demo.decode_entities(as_pred, every["word_ids"], "last")


def test_word_majority_tagger_reads_no_context():
    tag = demo.word_majority_tagger([(["Jordan", "x"], [1, 0]), (["Jordan", "Jordan"], [3, 3])])
    assert tag(["Jordan", "x", "unseen"]) == [3, 0, 0]


def test_exercise_checks_pass_the_reference_fail_a_wrong_answer_and_repeat(capsys):
    def copy_b(tags, word_ids):
        return demo.align_labels(tags, word_ids, label_all_tokens=True, b_to_i=None)

    def b_to_i(tags, word_ids):
        return demo.align_labels(tags, word_ids, label_all_tokens=True)

    def no_i_after_o(tags):  # ill-formed I- after O dropped: wrong under conlleval
        return [e for e in demo.bio_entities(tags) if tags[e[1]].startswith("B-")]

    for _ in range(2):  # the same verdict when run twice
        demo.check_aligner("a", b_to_i)
        demo.check_aligner("b", copy_b)
        demo.check_entity_decoder("c", demo.bio_entities)
        demo.check_entity_decoder("d", no_i_after_o)
        demo.check_aligner("e", ...)
    out = capsys.readouterr().out.splitlines()
    assert out[:5] == out[5:]
    assert out[0].startswith("a: correct") and out[1].startswith("b: not yet")
    assert out[2].startswith("c: correct") and out[3].startswith("d: not yet") and "not attempted" in out[4]


def test_alignment_explorer_logits_lie_on_the_slider_grid_so_an_echo_changes_nothing():
    ex = AlignmentExplorer(sentence=1, padding=1)
    logits, _ = ex.tensors()
    assert torch.equal(logits, torch.round(logits * 10) / 10)  # what the 0.1-step slider can show exactly
    for position in (1, 3, 5):
        ex.position.value = position  # re-syncs the slider to this token's logit
        before = (ex.loss, list(ex.grad_row))
        ex.logit.value = round(ex.logit.value, 1)  # the browser's snapped echo
        assert (ex.loss, list(ex.grad_row)) == before
        assert ex.logit.value == float(ex.logits[0, position, ex.tag.value])


def test_entity_f1_equals_seqeval_on_random_and_edge_case_tag_sequences():
    """lossbook's entity_f1 over bio_entities against the installed seqeval (default mode: conlleval's rules,
    micro average): I- after O or after another type starts an entity, B- B- is two, an empty prediction."""
    from conftest import require

    metrics = require("seqeval.metrics", "chapter 05's entity-level F1 is compared with seqeval's")

    g = torch.Generator().manual_seed(0)
    names = demo.TAGS
    gold = [[names[t] for t in torch.randint(0, len(names), (int(n),), generator=g).tolist()]
            for n in torch.randint(1, 12, (300,), generator=g)]
    found = [[names[t] if torch.rand((), generator=g) < 0.7 else names[int(torch.randint(0, 5, (), generator=g))]
              for t in map(names.index, row)] for row in gold]
    edge_gold = [["O", "I-LOC", "I-LOC"], ["B-PER", "B-PER"], ["B-PER", "I-LOC"], ["O", "O"], ["I-PER"]]
    edge_found = [["B-LOC", "I-LOC", "I-LOC"], ["B-PER", "I-PER"], ["B-PER", "I-LOC"], ["O", "B-LOC"], ["O"]]
    for gold_tags, found_tags in ((gold, found), (edge_gold, edge_found), (gold, gold)):
        ours = demo.entity_f1([demo.bio_entities(t) for t in gold_tags], [demo.bio_entities(t) for t in found_tags])
        theirs = {"precision": metrics.precision_score(gold_tags, found_tags),
                  "recall": metrics.recall_score(gold_tags, found_tags), "f1": metrics.f1_score(gold_tags, found_tags)}
        assert ours == pytest.approx(theirs, abs=1e-12), (ours, theirs)
    assert 0.2 < demo.entity_f1([demo.bio_entities(t) for t in gold], [demo.bio_entities(t) for t in found])["f1"] < 0.9
