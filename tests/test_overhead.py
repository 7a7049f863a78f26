"""lossbook's own cost per call: its checks dispatch no tensor operation of their own on the CPU.

Each label-value check runs once per call: on the CPU inside PyTorch's cross-entropy kernel (which raises on a
scored target outside [0, classes)), re-checked by lossbook for a clear message only when that kernel raises; on an
accelerator before the loss, with one synchronisation (issue 12).  These tests pin both halves: valid calls
dispatch exactly the aten operations transformers' functions dispatch, and invalid labels still get the clear
message naming the caller's argument, the value and the caller's shape.
"""

import re
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lossbook
from lossbook._checks import SMALL, check_in_range


class _Ops(TorchDispatchMode):
    """Counts the aten operations dispatched inside it (views and copies included)."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _ops(fn) -> Counter:
    with _Ops() as mode:
        fn()
    return mode.ops


class _Config:
    def __init__(self, num_labels, problem_type=None):
        self.num_labels, self.problem_type = num_labels, problem_type


def _inputs(batch, seq, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, vocab, generator=g)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[:, : seq // 4] = -100
    return logits, labels


def _cases(hf, batch, seq, vocab):
    z, y = _inputs(batch, seq, vocab)
    fz, fy = z.view(-1, vocab), y.view(-1)
    tz, ty = z[..., :9].contiguous(), y.clamp(max=8).masked_fill(y < 0, -100)
    g = torch.Generator().manual_seed(1)
    pooled, classes = torch.randn(batch, 3, generator=g), torch.randint(0, 3, (batch,), generator=g)
    s, e = torch.randn(batch, seq, generator=g), torch.randn(batch, seq, generator=g)
    a, b = torch.randint(0, seq + 8, (batch,), generator=g), torch.randint(0, seq + 8, (batch,), generator=g)
    return {
        "fixed_cross_entropy": (lambda: lossbook.fixed_cross_entropy(fz, fy),
                                lambda: hf.fixed_cross_entropy(fz, fy)),
        "fixed_cross_entropy, count": (lambda: lossbook.fixed_cross_entropy(fz, fy, num_items_in_batch=7),
                                       lambda: hf.fixed_cross_entropy(fz, fy, num_items_in_batch=7)),
        "causal_lm_loss": (lambda: lossbook.causal_lm_loss(z, y), lambda: hf.ForCausalLMLoss(z, y, vocab)),
        "causal_lm_loss, count": (lambda: lossbook.causal_lm_loss(z, y, num_items_in_batch=20),
                                  lambda: hf.ForCausalLMLoss(z, y, vocab, num_items_in_batch=20)),
        "masked_lm_loss": (lambda: lossbook.masked_lm_loss(z, y), lambda: hf.ForMaskedLMLoss(z, y, vocab)),
        "token_classification_loss": (lambda: lossbook.token_classification_loss(tz, ty, 9),
                                      lambda: hf.ForTokenClassification(tz, ty, _Config(9))),
        "sequence_classification_loss": (
            lambda: lossbook.sequence_classification_loss(classes, pooled, 3),
            lambda: hf.ForSequenceClassificationLoss(classes, pooled, _Config(3))),
        "question_answering_loss": (lambda: lossbook.question_answering_loss(s, e, a, b),
                                    lambda: hf.ForQuestionAnsweringLoss(s, e, a, b)),
    }


@pytest.mark.parametrize("size", [(2, 16, 64), (8, 64, 512)], ids=["small", "above-SMALL"])
def test_valid_cpu_calls_dispatch_no_tensor_operation_beyond_upstreams(hf_loss_utils, size):
    """No check of lossbook's dispatches a tensor operation on the CPU: every aten operation of a call is one of
    transformers' own (so the checks cost only Python, a few microseconds), and a call never dispatches more of
    them than upstream.  The one extra: the causal loss reads its first label column (which upstream never reads)
    through a ``select`` view, no copy; and it shifts the labels with one cropping pad, ``F.pad(labels, (-1, 1))``,
    where upstream pads, slices and copies (``clone``)."""
    for name, (ours, theirs) in _cases(hf_loss_utils, *size).items():
        assert ours().item() == pytest.approx(theirs().item(), rel=1e-6), name
        mine, upstream = _ops(ours), _ops(theirs)
        extra = Counter({"select": 1}) if name.startswith("causal") else Counter()
        assert mine - upstream == extra, name
        assert mine.total() <= upstream.total(), name
        if name.startswith("causal"):
            assert upstream - mine == Counter({"slice": 1, "clone": 1}), name  # the shift without a copy


def test_the_op_count_would_see_an_extra_check():
    """The comparison above can fail: a value check done with tensor operations shows up in the count."""
    z, y = _inputs(2, 16, 64)

    def checked():
        check_in_range("labels", y, 64, -100)  # python path for a small tensor: no operation ...
        return lossbook.causal_lm_loss(z, y)

    def checked_large():
        check_in_range("labels", y.repeat(8, 1), 64, -100)  # ... the tensor path: masked_fill, aminmax
        return lossbook.causal_lm_loss(z, y)

    assert _ops(checked) == _ops(lambda: lossbook.causal_lm_loss(z, y))
    extra = _ops(checked_large) - _ops(lambda: lossbook.causal_lm_loss(z, y))
    assert extra["aminmax"] == 1 and extra["masked_fill"] == 1


_MODULES = ("cross_entropy", "causal_lm", "masked_lm", "token_classification", "sequence_classification",
            "question_answering")


def test_one_path_per_loss_no_short_path_left():
    """Issue 23: each loss has one code path for every device and dtype, so nothing like the former CPU short
    path (``plain_cpu`` / ``plain_score``) exists in the loss modules, and the shared checks module has no
    such recogniser.  (The bit-for-bit test below shows long and int32 labels give the same result.)"""
    import importlib
    import inspect

    for module in ("_checks", *_MODULES):
        source = inspect.getsource(importlib.import_module(f"lossbook.{module}"))
        assert "plain_cpu" not in source and "plain_score" not in source, module


@pytest.mark.parametrize("count", [None, 20])
def test_long_and_int32_labels_agree_bit_for_bit(count):
    """Labels of any integer dtype are scored alike (int32 is converted to long, which upstream refuses): the
    same loss and gradient, bit for bit, for every loss."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 12, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (3, 12), generator=g)
    y[:, :3] = -100
    y[0, 0] = 4  # a first label that is a real token
    s, e = torch.randn(3, 12, generator=g), torch.randn(3, 12, generator=g)
    a, b = torch.tensor([0, 5, 40]), torch.tensor([3, 11, -2])  # 40 and -2: clamped, ignored / position 0
    pooled, classes = torch.randn(3, 4, generator=g), torch.tensor([1, 3, 0])
    n = {} if count is None else {"num_items_in_batch": count}
    cases = {
        "fixed_cross_entropy": lambda z, lab: lossbook.fixed_cross_entropy(z.view(-1, 10), lab.view(-1), **n),
        "causal_lm_loss": lambda z, lab: lossbook.causal_lm_loss(z, lab, **n),
        "masked_lm_loss": lambda z, lab: lossbook.masked_lm_loss(z, lab, **n),
        "token_classification_loss": lambda z, lab: lossbook.token_classification_loss(z, lab, 10),
        "sequence_classification_loss": lambda z, lab: lossbook.sequence_classification_loss(
            classes.to(lab.dtype), z[:, 0, :4] + pooled, 4),
        "question_answering_loss": lambda z, lab: lossbook.question_answering_loss(
            s + z[:, :, 0], e, a.to(lab.dtype), b.to(lab.dtype)),
    }
    for name, call in cases.items():
        out = {}
        for dtype in (torch.long, torch.int32):
            x = z.clone().requires_grad_()
            loss = call(x, y.to(dtype))
            loss.backward()
            out[dtype] = (loss.detach(), x.grad)
        assert torch.equal(out[torch.long][0], out[torch.int32][0]), name
        assert torch.equal(out[torch.long][1], out[torch.int32][1]), name


@pytest.mark.parametrize("batch,seq", [(2, 16), (8, 64)], ids=["small", "above-SMALL"])
@pytest.mark.parametrize("where,bad", [("middle", 70), ("middle", -3), ("first", 64), ("last", -1)])
@pytest.mark.parametrize("dtype", [torch.long, torch.int32], ids=["long", "int32"])
def test_bad_labels_still_get_the_clear_message_with_the_callers_name_and_shape(batch, seq, where, bad, dtype):
    vocab = 64
    z, y = _inputs(batch, seq, vocab)
    y = y.to(dtype)
    col = {"first": 0, "middle": seq // 2, "last": seq - 1}[where]
    y[1, col] = bad
    shape = re.escape(f"shape [{batch}, {seq}]")
    with pytest.raises(ValueError, match=rf"labels holds token id {bad}, outside \[0, {vocab}\).*{shape}"):
        lossbook.causal_lm_loss(z, y)  # the first label is never scored, and still checked
    if where != "first":  # the masked LM and token losses score every position
        with pytest.raises(ValueError, match=rf"labels holds token id {bad}, outside \[0, {vocab}\).*{shape}"):
            lossbook.masked_lm_loss(z, y)
    with pytest.raises(ValueError, match=rf"^shift_labels holds token id {bad}.*{shape}"):
        lossbook.causal_lm_loss(z, None, shift_labels=y)
    tags = y.clamp(max=8).masked_fill(y < 0, -100)
    tags[1, col] = bad if bad < 0 else 9
    with pytest.raises(ValueError, match=rf"labels holds tag {tags[1, col].item()}, outside \[0, 9\).*{shape}"):
        lossbook.token_classification_loss(z[..., :9].contiguous(), tags, 9)
    with pytest.raises(ValueError, match=rf"target holds class index {bad}, outside \[0, {vocab}\)"):
        lossbook.fixed_cross_entropy(z.view(-1, vocab), y.view(-1))


@pytest.mark.parametrize("seed", range(6))
def test_the_python_scan_and_the_tensor_path_report_the_same_value(seed):
    g = torch.Generator().manual_seed(seed)
    for classes, ignore in [(10, -100), (10, 3), (10, 12), (0, -100)]:
        y = torch.randint(-5, 15, (SMALL,), generator=g)
        big = torch.cat([y, torch.full((SMALL,), max(min(ignore, classes - 1), 0))])  # same values, > SMALL
        messages = []
        for t in (y, big):
            try:
                check_in_range("y", t, classes, ignore)
                messages.append(None)
            except ValueError as error:
                messages.append(str(error).split(" (shape")[0])
        assert messages[0] == messages[1], (classes, ignore)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="hardware: needs a CUDA GPU to count synchronisations")
def test_at_most_one_synchronisation_per_call_on_a_gpu(hf_loss_utils):
    """On a GPU each loss checks its label values before the loss (an out-of-range target there is a device-side
    assert), reading the minimum and maximum together: one synchronisation, counted by PyTorch's sync debug mode
    (which warns once per synchronising call)."""
    import warnings

    z, y = (t.cuda() for t in _inputs(4, 32, 64))
    calls = {
        "causal_lm_loss": lambda: lossbook.causal_lm_loss(z, y),
        "masked_lm_loss": lambda: lossbook.masked_lm_loss(z, y),
        "fixed_cross_entropy": lambda: lossbook.fixed_cross_entropy(z.view(-1, 64), y.view(-1)),
        "causal_lm_loss, tensor count": lambda: lossbook.causal_lm_loss(z, y, num_items_in_batch=torch.tensor(
            90, device="cuda")),
    }
    for name, call in calls.items():
        call()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        assert len(syncs) <= 1, (name, [str(w.message) for w in syncs])
