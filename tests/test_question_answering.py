"""question_answering_loss against transformers, sympy and autograd; its bug zoo, explorer and demo helpers."""

import math

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from _half import assert_loss_close

from lossbook import derivations, question_answering_loss
from lossbook.bugzoo import question_answering as bugs
from lossbook.checks import compare_losses
from lossbook.demos import question_answering as demo
from lossbook.derivations import question_answering as dqa
from lossbook.widgets.question_answering import SpanExplorer

DTYPES = {torch.float32: 1e-6, torch.bfloat16: 0.0, torch.float16: 0.0}  # no upcast upstream: same kernel, exact


def _inputs(seed, batch, seq, dtype, edge):
    g = torch.Generator().manual_seed(seed)
    start_logits = (3 * torch.randn(batch, seq, generator=g)).to(dtype)
    end_logits = (3 * torch.randn(batch, seq, generator=g)).to(dtype)
    starts = torch.randint(0, seq, (batch,), generator=g)
    ends = torch.randint(0, seq, (batch,), generator=g)
    if edge == "out_of_range":
        starts[0] = seq + 5  # ignored in the start head only
        ends[-1] = seq  # exactly seq: ignored in the end head
    elif edge == "negative":
        starts[0], ends[-1] = -1, -7  # clamped to 0 and scored
    elif edge == "all_ignored":
        starts[:] = seq
        ends[:] = seq + 2
    elif edge == "column":
        starts, ends = starts.unsqueeze(-1), ends.unsqueeze(-1)  # [batch, 1]
    return start_logits, end_logits, starts, ends


def _value_and_grads(fn, start_logits, end_logits, starts, ends, **kwargs):
    s = start_logits.detach().clone().requires_grad_(True)
    e = end_logits.detach().clone().requires_grad_(True)
    loss = fn(s, e, starts, ends, **kwargs)
    loss.backward()
    return loss.detach(), s.grad, e.grad


SHAPES = [(1, 1), (1, 9), (5, 1), (6, 8), (16, 33)]  # batch 1 and length 1 included
EDGES = ["none", "out_of_range", "negative", "all_ignored", "column"]


def _parity_params():
    """seeds x shapes x dtypes x edge cases, each with no count; and each shape x dtype x edge with a count."""
    for dtype in DTYPES:
        for i, (batch, seq) in enumerate(SHAPES):
            for edge in EDGES:
                for seed in (0, 1):
                    yield pytest.param(seed, batch, seq, dtype, edge, None, id=f"{dtype}-{batch}x{seq}-{edge}-s{seed}")
                count = 7 if i % 2 else "tensor"  # int and tensor counts, alternating over shapes
                yield pytest.param(2, batch, seq, dtype, edge, count, id=f"{dtype}-{batch}x{seq}-{edge}-n{count}")


@pytest.mark.parametrize("seed,batch,seq,dtype,edge,num_items", list(_parity_params()))
def test_parity_with_transformers(hf_loss_utils, seed, batch, seq, dtype, edge, num_items):
    inputs = _inputs(seed, batch, seq, dtype, edge)
    if num_items == "tensor":
        num_items = torch.tensor(batch + 2)
    kwargs = {} if num_items is None else {"num_items_in_batch": num_items}
    ours = _value_and_grads(question_answering_loss, *inputs, **kwargs)
    theirs = _value_and_grads(hf_loss_utils.ForQuestionAnsweringLoss, *inputs, **kwargs)
    assert ours[0].dtype == theirs[0].dtype == dtype  # no upcast, as upstream
    tol = DTYPES[dtype]
    assert_loss_close(ours[0], theirs[0], tol, ulps=2)  # half: two heads, each within one ulp, then averaged
    for a, b in zip(ours[1:], theirs[1:]):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, equal_nan=True)
    if edge == "all_ignored" and num_items is None:
        assert torch.isnan(ours[0]) and not ours[1].any() and not ours[2].any()  # documented: NaN, zero grads


def test_mixed_position_shapes_and_uint8_match_upstream(hf_loss_utils):
    start_logits, end_logits, starts, ends = _inputs(3, 4, 6, torch.float32, "none")
    for s, e in [(starts, ends.unsqueeze(-1)), (starts.to(torch.uint8), ends.to(torch.uint8))]:
        ours = _value_and_grads(question_answering_loss, start_logits, end_logits, s, e)
        theirs = _value_and_grads(hf_loss_utils.ForQuestionAnsweringLoss, start_logits, end_logits, s, e)
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_none_positions_return_none_as_upstream(hf_loss_utils):
    s, e, starts, ends = _inputs(0, 2, 4, torch.float32, "none")
    for a, b in [(None, ends), (starts, None), (None, None)]:
        assert question_answering_loss(s, e, a, b) is None
        assert hf_loss_utils.ForQuestionAnsweringLoss(s, e, a, b) is None


def test_shared_cases_pass_and_compare_both_heads(hf_loss_utils):
    cases = demo.question_answering_cases(0)
    assert {next(iter(c)) for c in cases} == {"start_logits", "end_logits"}
    result = compare_losses(question_answering_loss, hf_loss_utils.ForQuestionAnsweringLoss, cases, atol=0.0)
    assert result.passed, result


def test_negative_positions_count_as_token_zero():
    s, e, _, _ = _inputs(4, 3, 5, torch.float64, "none")
    starts, ends = torch.tensor([-1, 2, -9]), torch.tensor([1, 2, 3])
    as_zero = question_answering_loss(s, e, torch.tensor([0, 2, 0]), ends)
    torch.testing.assert_close(question_answering_loss(s, e, starts, ends), as_zero, atol=0, rtol=0)


def test_heads_average_over_their_own_kept_rows():
    s, e, _, _ = _inputs(5, 4, 6, torch.float64, "none")
    starts, ends = torch.tensor([0, 1, 2, 3]), torch.tensor([9, 9, 9, 4])  # 4 kept starts, 1 kept end
    ce = torch.nn.functional.cross_entropy
    expected = (ce(s, starts) + ce(e[3:], ends[3:])) / 2
    torch.testing.assert_close(question_answering_loss(s, e, starts, ends), expected)


@pytest.mark.parametrize("seed", range(2))
def test_gradcheck_float64(seed):
    s, e, starts, ends = _inputs(seed, 3, 4, torch.float64, "out_of_range")
    s.requires_grad_(True)
    e.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: question_answering_loss(a, b, starts, ends), (s, e))
    assert torch.autograd.gradcheck(
        lambda a, b: question_answering_loss(a, b, starts, ends, num_items_in_batch=9), (s, e)
    )


# ---- sympy -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start,end", [(0, 0), (1, 3), (3, 2)])
def test_sympy_gradient_is_half_softmax_minus_onehot(start, end):
    zs, ze = derivations.logit_symbols(4, "s"), derivations.logit_symbols(4, "e")
    loss = dqa.span_loss(zs, ze, start, end)
    grad_start, grad_end = dqa.span_loss_grad(zs, ze, start, end)
    for z, closed in ((zs, grad_start), (ze, grad_end)):
        assert all(sp.simplify(sp.diff(loss, zi) - g) == 0 for zi, g in zip(z, closed))
    wrong = [p - o for p, o in zip(derivations.softmax(zs), derivations.onehot(4, start))]  # forgot the 1/2
    assert sp.simplify(sp.diff(loss, zs[0]) - wrong[0]) != 0


def test_clamp_rule():
    assert [dqa.clamp_position(p, 5) for p in (-3, -1, 0, 4, 5, 6, 99)] == [0, 0, 0, 4, 5, 5, 5]
    assert [dqa.is_ignored(p, 5) for p in (-1, 4, 5, 12)] == [False, False, True, True]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("num_items", [None, 6])
def test_sympy_value_and_gradient_equal_lossbook(seed, num_items):
    batch, seq = 3, 4
    s, e, _, _ = _inputs(seed, batch, seq, torch.float64, "none")
    starts, ends = torch.tensor([1, -2, 3]), torch.tensor([2, 0, 7])  # a negative start, a cut-off end
    zs = [derivations.logit_symbols(seq, f"s{b}_") for b in range(batch)]
    ze = [derivations.logit_symbols(seq, f"e{b}_") for b in range(batch)]
    expr = dqa.batch_span_loss(zs, ze, starts.tolist(), ends.tolist(), num_items_in_batch=num_items)
    symbols = [z for row in zs + ze for z in row]
    values = s.flatten().tolist() + e.flatten().tolist()
    ours = _value_and_grads(question_answering_loss, s, e, starts, ends, num_items_in_batch=num_items)
    assert float(sp.lambdify(symbols, expr)(*values)) == pytest.approx(ours[0].item(), rel=1e-12)
    grad = torch.tensor([float(sp.lambdify(symbols, sp.diff(expr, z))(*values)) for z in symbols], dtype=torch.float64)
    torch.testing.assert_close(grad, torch.cat([ours[1].flatten(), ours[2].flatten()]))


def test_sympy_all_ignored_is_nan():
    zs, ze = [derivations.logit_symbols(2, "s")], [derivations.logit_symbols(2, "e")]
    assert dqa.batch_span_loss(zs, ze, [5], [0]) is sp.nan
    assert dqa.batch_span_loss(zs, ze, [5], [7], num_items_in_batch=1) == 0


# ---- bad input: clear errors naming the argument and the shapes --------------------------------------------------


def _long(*values):
    return torch.tensor(values)


@pytest.mark.parametrize(
    "args,kwargs,error,message",
    [
        ((torch.randn(2, 5), torch.randn(2, 6), _long(0, 1), _long(1, 2)), {}, ValueError,
         r"end_logits must have the shape of start_logits \[2, 5\], got \[2, 6\]"),
        ((torch.randn(2, 5, 1), torch.randn(2, 5, 1), _long(0, 1), _long(1, 2)), {}, ValueError,
         r"start_logits must be \[batch, seq\].*got shape \[2, 5, 1\].*squeeze"),
        ((torch.randn(5), torch.randn(5), _long(1), _long(2)), {}, ValueError, r"start_logits .*got shape \[5\]"),
        ((torch.randn(3, 5), torch.randn(3, 5), _long(0, 1), _long(1, 2, 3)), {}, ValueError,
         r"start_positions must have shape \[3\] or \[3, 1\].*got \[2\]"),
        ((torch.randn(3, 5), torch.randn(3, 5), _long(0, 1, 2), torch.zeros(3, 2, dtype=torch.long)), {}, ValueError,
         r"end_positions must have shape \[3\] or \[3, 1\].*got \[3, 2\]"),
        ((torch.randn(3, 5), torch.randn(3, 5), torch.zeros(3, 1, 1, dtype=torch.long), _long(1, 2, 3)), {},
         ValueError, r"start_positions .*got \[3, 1, 1\]"),
        ((torch.randn(1, 5), torch.randn(1, 5), torch.tensor(1), torch.tensor(2)), {}, ValueError,
         r"start_positions must have shape \[1\] or \[1, 1\].*got \[\]"),
        ((torch.randn(3, 5), torch.randn(3, 5), torch.zeros(3), _long(1, 2, 3)), {}, TypeError,
         r"start_positions must hold integer token positions.*float32 with shape \[3\]"),
        ((torch.randn(3, 5), torch.randn(3, 5), _long(0, 1, 2), torch.ones(3, dtype=torch.bool)), {}, TypeError,
         r"end_positions must hold integer .*bool with shape \[3\]"),
        ((torch.randn(3, 5), torch.randn(3, 5), [0, 1, 2], _long(1, 2, 3)), {}, TypeError,
         r"start_positions must be a torch.Tensor, got list"),
        ((torch.zeros(3, 5, dtype=torch.long), torch.randn(3, 5), _long(0, 1, 2), _long(1, 2, 3)), {}, TypeError,
         r"start_logits must be a floating-point tensor"),
        ((torch.randn(3, 5), torch.randn(3, 5), _long(0, 1, 2), _long(1, 2, 3)), {"ignore_index": 5}, TypeError,
         r"ignore_index.*always the sequence length"),
    ],
)  # fmt: skip
def test_bad_input_errors_name_argument_and_shapes(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        question_answering_loss(*args, **kwargs)


# ---- bug zoo ------------------------------------------------------------------------------------------------------

FAILING = [bugs.clamps_to_last_token, bugs.sums_the_two_losses, bugs.swaps_start_and_end, bugs.pools_both_heads,
           bugs.onehot_without_squeeze]  # fmt: skip


@pytest.mark.parametrize("bug", FAILING, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_bug_fails_the_check(bug, seed):
    result = compare_losses(bug, question_answering_loss, demo.question_answering_cases(seed))
    assert not result.passed, result


def test_no_clamping_raises_where_upstream_does_not(hf_loss_utils):
    s, e, starts, ends = _inputs(0, 4, 6, torch.float32, "out_of_range")
    assert torch.isfinite(hf_loss_utils.ForQuestionAnsweringLoss(s, e, starts, ends))
    with pytest.raises(IndexError, match="out of bounds"):
        bugs.no_clamping(s, e, starts, ends)
    in_range = [c for c in demo.question_answering_cases(0) if c["start_logits"].shape[0] == 1]
    assert compare_losses(bugs.no_clamping, question_answering_loss, in_range).passed  # right when nothing is cut off


def test_subtle_bugs_pass_only_on_their_blind_spot():
    cases = demo.question_answering_cases(0)
    flat = [c for c in cases if c["start_positions"].dim() == 1]
    assert compare_losses(bugs.onehot_without_squeeze, question_answering_loss, flat).passed
    all_kept = [c for c in cases if c["start_logits"].shape[0] == 1]  # batch 1: nothing cut off
    assert compare_losses(bugs.pools_both_heads, question_answering_loss, all_kept).passed


# ---- the explorer -------------------------------------------------------------------------------------------------


def test_span_explorer_follows_sliders():
    ex = SpanExplorer()
    ex.pred_start.value = 4
    ex.sharpness.value = 6.0
    ex.gold_end.value = 14
    s, e, starts, ends = ex.tensors()
    assert s.shape == (1, len(ex.tokens)) and starts.shape == (1,)
    value, grad_s, grad_e = _value_and_grads(question_answering_loss, s, e, starts, ends)
    assert ex.loss == pytest.approx(value.item(), rel=1e-12)
    torch.testing.assert_close(torch.tensor(ex.start_grad, dtype=torch.float64), grad_s[0])
    torch.testing.assert_close(torch.tensor(ex.end_grad, dtype=torch.float64), grad_e[0])
    assert ex.start_grad[11] == pytest.approx((ex.start_probs[11] - 1) / 2)  # (softmax - onehot) / 2
    assert f">{value.item():.4f}<" in ex.html.value
    ex.column.value = True
    assert ex.tensors()[2].shape == (1, 1) and ex.loss == pytest.approx(value.item(), rel=1e-12)


def test_span_explorer_shows_clamping():
    ex = SpanExplorer(cls_for_cut_off=False)  # positions as given: the loss's clamp rule
    ex.gold_end.value = len(ex.tokens) + 2  # cut off
    assert math.isnan(ex.loss) and not any(ex.end_grad)
    assert f"clamped to (11, {len(ex.tokens)})" in ex.html.value and "ignored" in ex.html.value
    ex.gold_start.value = -2
    ex.gold_end.value = 13
    assert ex.clamped == (0, 13) and math.isfinite(ex.loss)


def test_span_explorer_labels_a_cut_off_answer_cls_by_default():
    ex = SpanExplorer()
    ex.gold_end.value = len(ex.tokens) + 2  # cut off: the recipe labels the window (0, 0)
    assert ex.labelled == (0, 0) and ex.clamped == (0, 0) and math.isfinite(ex.loss)
    assert ex.start_grad[0] < 0 and ex.end_grad[0] < 0  # both heads pushed towards [CLS]
    assert "labelled (0, 0), [CLS] = no answer" in ex.html.value
    start_logits, end_logits, starts, ends = ex.tensors()
    assert ex.loss == pytest.approx(question_answering_loss(start_logits, end_logits, starts * 0, ends * 0).item())
    ex.cls_for_cut_off.value = False  # the same window, positions left past it: the end head has no row
    assert math.isnan(ex.loss) and not any(ex.end_grad)
    ex.gold_end.value = 13  # the whole answer inside: the box changes nothing
    with_box = SpanExplorer()
    assert ex.loss == pytest.approx(with_box.loss) and ex.labelled == with_box.labelled == (11, 13)


# ---- demo helpers -------------------------------------------------------------------------------------------------


def test_window_labels_cls_recipe_and_ignored_windows():
    starts, ends = torch.tensor([3, -1, 30, 5]), torch.tensor([4, -1, 33, 31])  # window positions, -1: not whole
    s, e = demo.window_labels(starts, ends, 32)  # the recipe: not all inside -> (0, 0)
    assert s.tolist() == [3, 0, 0, 5] and e.tolist() == [4, 0, 0, 31]
    s, e = demo.window_labels(starts, ends, 32, "ignore")  # past the window: the loss ignores them
    assert s.tolist() == [3, 32, 32, 5] and e.tolist() == [4, 32, 32, 31] and s is not starts
    logits = torch.randn(4, 32)
    kept = question_answering_loss(logits[[0, 3]], logits[[0, 3]], s[[0, 3]], e[[0, 3]])
    assert torch.equal(question_answering_loss(logits, logits, s, e), kept)  # the ignored rows count for nothing
    with pytest.raises(ValueError, match="no_answer"):
        demo.window_labels(starts, ends, 32, "document")


def test_predict_spans_scores_each_window_and_skips_the_question():
    start_logits = torch.tensor([[0.0, -9.0, -9.0, 2.0, 0.0, 0.0], [5.0, 9.0, 9.0, 2.0, 0.0, 0.0]])
    end_logits = torch.tensor([[0.0, -9.0, -9.0, 0.0, 3.0, 0.0], [1.0, 9.0, 9.0, 0.0, 3.0, 0.0]])
    spans, span_score, null_score = demo.predict_spans(start_logits, end_logits, max_answer=3)
    assert spans.tolist() == [[3, 4], [3, 4]]  # positions 1, 2 (the question, [SEP]) are never candidates
    assert span_score.tolist() == [5.0, 5.0] and null_score.tolist() == [0.0, 6.0]


def _windows(question, offset, gold):
    w = len(question)
    return demo.SpanQuestions(
        torch.zeros(w, 8, dtype=torch.long), torch.tensor(question), torch.tensor(offset), torch.full((w,), -1),
        torch.full((w,), -1), torch.tensor([s for s, _ in gold]), torch.tensor([e for _, e in gold]),
    )


def test_predict_answers_follows_postprocess_qa_predictions():
    """Best span over a question's windows, in document positions; null = the smallest window null score, taken
    only when it beats the best span (utils_qa.py's postprocess_qa_predictions, threshold 0)."""
    windows = _windows([0, 0, 1, 1], [0, 4, 0, 4], [(9, 10), (0, 0)])
    start = torch.full((4, 8), -5.0)
    end = torch.full((4, 8), -5.0)
    start[0, 3], end[0, 4] = 1.0, 1.0  # question 0, window 0: span (3, 4) scores 2
    start[1, 5], end[1, 6] = 3.0, 3.0  # question 0, window 1: span (5, 6) scores 6 -> document (9, 10)
    start[:2, 0] = end[:2, 0] = 2.0  # null 4 in both windows: loses to 6
    start[2, 0] = end[2, 0] = 4.0  # question 1: nulls 8 and 1 -> 1, beats its best span (-10)
    start[3, 0] = end[3, 0] = 0.5
    pred = demo.predict_answers(start, end, windows, max_answer=3)
    assert pred.tolist() == [[9, 10], [0, 0]]
    start[3, 6], end[3, 6] = 1.0, 1.0  # question 1's window 1 now has a span scoring 2 > its min null 1
    assert demo.predict_answers(start, end, windows, max_answer=3).tolist() == [[9, 10], [10, 10]]
    assert demo.predict_answers(start, end, windows, max_answer=3, threshold=-2.0).tolist()[1] == [0, 0]
    scores = demo.squad_v2_scores(pred, windows.gold_starts, windows.gold_ends)
    assert scores == {"exact": 1.0, "HasAns_exact": 1.0, "NoAns_exact": 1.0}
    never_null = torch.tensor([[9, 10], [3, 4]])  # what a reader that never learned "no answer" does
    scores = demo.squad_v2_scores(never_null, windows.gold_starts, windows.gold_ends)
    assert scores == {"exact": 0.5, "HasAns_exact": 1.0, "NoAns_exact": 0.0}


def test_span_questions_cut_documents_into_windows_as_prepare_train_features():
    vocab = demo.SpanVocab()
    data = demo.make_span_questions(300, generator=torch.Generator().manual_seed(2))
    again = demo.make_span_questions(300, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(getattr(data, f), getattr(again, f)) for f in ("ids", "starts", "gold_starts"))
    assert data.ids.shape == (600, 32) and data.offset.tolist()[:2] == [0, 16] and len(data) == 300
    assert 0.25 < float((data.gold_ends == 0).float().mean()) < 0.42  # about a third without an answer
    for w in range(len(data.ids)):
        q, o, s, e = (int(t[w]) for t in (data.question, data.offset, data.starts, data.ends))
        gs, ge = int(data.gold_starts[q]), int(data.gold_ends[q])
        assert torch.equal(data.ids[w, :3], data.ids[2 * q, :3])  # [CLS] Q [SEP] in every window
        if s >= 0:  # the whole answer in this window, at its document position minus the offset
            assert (s + o, e + o) == (gs, ge) and 3 <= s <= e < 32
            if s > 3:  # the marker before it (a window may start right after the marker, as real windows do)
                assert int(data.ids[w, s - 1]) == vocab.marker(int(data.ids[w, 1]) - vocab.question(0))
        else:
            assert ge == 0 or gs < o + 3 or ge >= o + 32
    answered = data.gold_ends > 0
    held = torch.zeros(300, dtype=torch.bool).index_put_((data.question[data.starts >= 0],), torch.tensor(True))
    assert torch.equal(held, answered)  # every answer lies whole in some window
    with pytest.raises(ValueError, match="stride"):
        demo.make_span_questions(4, stride=28)


def test_train_reader_selects_on_validation_and_learns_no_answer():
    g = torch.Generator().manual_seed(0)
    vocab = demo.SpanVocab()
    train = demo.make_span_questions(300, generator=g)
    val = demo.make_span_questions(100, generator=g)
    s, e = demo.window_labels(train.starts, train.ends, 32)
    model, history, best = demo.train_reader(
        train, s, e, val, vocab_size=vocab.size, steps=40, eval_every=20, progress=False, device=torch.device("cpu")
    )
    logged = dict(history["val_exact"])
    assert best in logged and logged[best] == max(logged.values())
    with torch.no_grad():
        pred = demo.predict_answers(*model(val.ids), val, max_answer=3)
    assert demo.squad_v2_scores(pred, val.gold_starts, val.gold_ends)["exact"] == pytest.approx(logged[best])


def test_span_data_is_deterministic_and_correct():
    vocab = demo.SpanVocab()
    ids, starts, ends = demo.make_span_data(64, seq=32, generator=torch.Generator().manual_seed(3))
    again = demo.make_span_data(64, seq=32, generator=torch.Generator().manual_seed(3))
    assert ids.shape == (64, 32) and starts.shape == ends.shape == (64,)
    assert all(torch.equal(a, b) for a, b in zip((ids, starts, ends), again))
    assert (starts <= ends).all() and (ends - starts < 3).all()
    cut = ends >= 32
    assert 0 < int(cut.sum()) < 32  # some answers are cut off by the window, most are not
    for row, s, e in zip(ids[~cut], starts[~cut], ends[~cut]):
        asked = int(row[1]) - vocab.question(0)
        assert int(row[s - 1]) == vocab.marker(asked)
        assert all(vocab.first_value <= int(t) < vocab.first_filler for t in row[s : e + 1])
        assert e + 1 == 32 or int(row[e + 1]) == vocab.STOP


def test_reader_shapes_and_exact_match():
    model = demo.SpanReader(demo.SpanVocab().size)
    ids, starts, ends = demo.make_span_data(5, seq=16, document=20)
    start_logits, end_logits = model(ids)
    assert start_logits.shape == end_logits.shape == (5, 16)
    perfect_s = torch.nn.functional.one_hot(starts.clamp(max=15), 16).float() * 50  # [5, 16]
    perfect_e = torch.nn.functional.one_hot(ends.clamp(max=15), 16).float() * 50
    assert demo.best_spans(perfect_s, perfect_e)[:, 0].tolist() == starts.clamp(max=15).tolist()
    spans = demo.best_spans(torch.randn(7, 10), torch.randn(7, 10), max_answer=3)  # [7, 2]
    assert ((spans[:, 1] >= spans[:, 0]) & (spans[:, 1] - spans[:, 0] < 3)).all()


def test_half_precision_heads_do_not_overflow_and_errors_name_the_head(hf_loss_utils):
    g = torch.Generator().manual_seed(0)
    start, end = ((30 * torch.randn(4000, 64, generator=g)).half() for _ in range(2))  # [batch, seq]
    starts, ends = (torch.randint(0, 64, (4000,), generator=g) for _ in range(2))
    exact = (F.cross_entropy(start.double(), starts) + F.cross_entropy(end.double(), ends)) / 2
    ours = question_answering_loss(start, end, starts, ends)
    assert ours.dtype == torch.float16 and abs(float(ours) - float(exact)) < 4e-3 * float(exact)
    assert torch.isinf(hf_loss_utils.ForQuestionAnsweringLoss(start, end, starts, ends))
    with pytest.raises(ValueError, match=r"weight must have shape \[64\] \(one weight per class of start_logits"):
        question_answering_loss(start.float(), end.float(), starts, ends, weight=torch.ones(3))


def test_short_documents_ask_only_about_keys_they_hold():
    """A document too short for every key block asks about a placed key (the gold span was once left unset)."""
    vocab = demo.SpanVocab()
    ids, starts, ends = demo.make_span_data(200, seq=16, document=20)
    assert ((starts >= 4) & (starts <= ends) & (ends < 23)).all()  # inside the document, never garbage
    for row, s in zip(ids, starts):
        if s - 1 < 16:
            assert vocab.marker(0) <= int(row[s - 1]) < vocab.marker(0) + vocab.keys  # a key's marker precedes it
