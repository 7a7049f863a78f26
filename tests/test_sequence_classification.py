"""sequence_classification_loss against transformers, sympy and autograd; its errors, bug zoo, widget and demo."""

import warnings
from types import SimpleNamespace

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from _half import assert_loss_close

from lossbook import derivations as d
from lossbook import sequence_classification_loss
from lossbook.bugzoo import sequence_classification as zoo
from lossbook.checks import compare_losses
from lossbook.demos import sequence_classification as demo
from lossbook.derivations import sequence_classification as dsc
from lossbook.sequence_classification import PROBLEM_TYPES, infer_problem_type
from lossbook.widgets.sequence_classification import SequenceClassificationExplorer

REG, SINGLE, MULTI = PROBLEM_TYPES
TOL = {torch.float32: 1e-6, torch.bfloat16: 0.0, torch.float16: 0.0}  # halves: the same kernels, so exact


def upstream(hf_loss_utils):
    """transformers' loss with lossbook's signature (a fresh config per call: upstream writes into it)."""

    def loss(labels, pooled_logits, num_labels, problem_type=None, **kwargs):
        config = SimpleNamespace(num_labels=num_labels, problem_type=problem_type)
        return hf_loss_utils.ForSequenceClassificationLoss(labels, pooled_logits, config, **kwargs)

    return loss


def _run(fn, labels, logits, num_labels, problem_type=None, **kwargs):
    """(value, dL/dlogits, dL/dlabels or None), upstream warnings turned into errors."""
    logits = logits.detach().clone().requires_grad_(True)
    labels = labels.detach().clone()
    if labels.is_floating_point():
        labels.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = fn(labels, logits, num_labels, problem_type, **kwargs)
    loss.backward()
    return loss.detach(), logits.grad, labels.grad


def _assert_same(ours, theirs, tol):
    assert ours[0].dtype == theirs[0].dtype and ours[0].shape == theirs[0].shape
    assert_loss_close(ours[0], theirs[0], tol)  # half: within one ulp (lossbook reduces in float32)
    for a, b in zip(ours[1:], theirs[1:]):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, atol=tol, rtol=tol, equal_nan=True)


def _make(kind, batch, seed, dtype, label_dtype=None):
    """(labels, logits, num_labels) for one problem type; shapes as a model gives them."""
    g = torch.Generator().manual_seed(seed)
    classes = {"reg1": 1, "reg3": 3, "single": 4, "multi": 5, "soft": 5}[kind]
    logits = (3 * torch.randn(batch, classes, generator=g)).to(dtype)  # [batch, classes]
    if kind == "reg1":
        labels = torch.randn(batch, generator=g)  # [batch]
    elif kind == "reg3":
        labels = torch.randn(batch, 3, generator=g)  # [batch, 3]
    elif kind == "single":
        labels = torch.randint(0, classes, (batch,), generator=g)  # [batch]
    elif kind == "multi":
        labels = torch.randint(0, 2, (batch, classes), generator=g).float()  # [batch, classes]
    else:
        labels = torch.rand(batch, classes, generator=g)
    if label_dtype is not None:
        labels = labels.to(label_dtype)
    return labels, logits, classes


KINDS = {"reg1": REG, "reg3": REG, "single": SINGLE, "multi": MULTI, "soft": MULTI}


# 3 regression outputs need an explicit problem_type (float labels with num_labels > 1 infer multi-label)
TYPED = [(kind, explicit) for kind in KINDS for explicit in (False, True) if explicit or kind != "reg3"]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("kind,explicit", TYPED)
def test_parity_with_transformers(hf_loss_utils, seed, batch, dtype, kind, explicit):
    labels, logits, num_labels = _make(kind, batch, seed, dtype)
    problem_type = KINDS[kind] if explicit else None
    ours = _run(sequence_classification_loss, labels, logits, num_labels, problem_type)
    theirs = _run(upstream(hf_loss_utils), labels, logits, num_labels, problem_type)
    _assert_same(ours, theirs, TOL[dtype])
    assert torch.isfinite(ours[0])


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("kind", ["reg1", "reg3", "multi", "soft"])
@pytest.mark.parametrize("label_dtype", [torch.float32, torch.float64, torch.bfloat16, "same"])
def test_parity_with_mixed_label_dtypes(hf_loss_utils, dtype, kind, label_dtype):
    """No upcast, as upstream: the result dtype is whatever torch's promotion gives."""
    labels, logits, num_labels = _make(kind, 6, 0, dtype, dtype if label_dtype == "same" else label_dtype)
    problem_type = REG if kind == "reg3" else None
    ours = _run(sequence_classification_loss, labels, logits, num_labels, problem_type)
    theirs = _run(upstream(hf_loss_utils), labels, logits, num_labels, problem_type)
    _assert_same(ours, theirs, 0.0)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("shapes", [("b1", "b"), ("b1", "b1"), ("b", "b"), ("b", "b1")])
@pytest.mark.parametrize("label_dtype", [torch.float32, torch.long, torch.bool])
def test_regression_squeeze_shapes(hf_loss_utils, batch, shapes, label_dtype):
    """num_labels=1: [batch, 1] or [batch] logits with [batch] or [batch, 1] labels; batch 1 gives 0-dim tensors."""
    g = torch.Generator().manual_seed(batch)
    logits = torch.randn(batch, 1, generator=g)
    labels = torch.randint(0, 2, (batch, 1), generator=g).to(label_dtype)
    logits = logits if shapes[0] == "b1" else logits.view(batch)
    labels = labels if shapes[1] == "b1" else labels.view(batch)
    ours = _run(sequence_classification_loss, labels, logits, 1)
    theirs = _run(upstream(hf_loss_utils), labels, logits, 1)
    _assert_same(ours, theirs, 1e-6)
    expected = ((logits.view(-1) - labels.view(-1).float()) ** 2).mean()
    torch.testing.assert_close(ours[0], expected)


@pytest.mark.parametrize("num_items", [None, 9, "tensor"])
@pytest.mark.parametrize("ignored", [0, 2, "all"])
@pytest.mark.parametrize("batch", [1, 6])
def test_single_label_ignore_index_and_num_items(hf_loss_utils, num_items, ignored, batch):
    labels, logits, num_labels = _make("single", batch, 3, torch.float32)
    labels[: batch if ignored == "all" else ignored] = -100
    if num_items == "tensor":
        num_items = torch.tensor(11)
    kwargs = {} if num_items is None else {"num_items_in_batch": num_items}
    ours = _run(sequence_classification_loss, labels, logits, num_labels, **kwargs)
    theirs = _run(upstream(hf_loss_utils), labels, logits, num_labels, **kwargs)
    _assert_same(ours, theirs, 1e-6)
    if ignored == "all" and num_items is None:
        assert torch.isnan(ours[0]) and torch.equal(ours[1], torch.zeros_like(ours[1]))  # documented: 0/0


@pytest.mark.parametrize("kind", ["reg1", "multi"])
def test_num_items_and_ignore_index_do_not_act_outside_single_label(hf_loss_utils, kind):
    """As upstream: regression and multi-label take the plain mean, whatever the keywords say."""
    labels, logits, num_labels = _make(kind, 4, 0, torch.float32)
    kwargs = {"num_items_in_batch": 100, "ignore_index": 0}
    ours = _run(sequence_classification_loss, labels, logits, num_labels, **kwargs)
    _assert_same(ours, _run(upstream(hf_loss_utils), labels, logits, num_labels, **kwargs), 1e-6)
    _assert_same(ours, _run(sequence_classification_loss, labels, logits, num_labels), 0.0)


def test_single_label_other_label_shapes_and_explicit_uint8(hf_loss_utils):
    labels, logits, num_labels = _make("single", 5, 4, torch.float32)
    ours = _run(sequence_classification_loss, labels.view(5, 1), logits, num_labels)
    _assert_same(ours, _run(upstream(hf_loss_utils), labels.view(5, 1), logits, num_labels), 1e-6)
    one_row = (labels[0], logits[0])  # [] labels, [classes] logits: one item
    ours = _run(sequence_classification_loss, *one_row, num_labels)
    _assert_same(ours, _run(upstream(hf_loss_utils), *one_row, num_labels), 1e-6)
    u8 = labels.to(torch.uint8)
    ours = _run(sequence_classification_loss, u8, logits, num_labels, SINGLE)
    _assert_same(ours, _run(upstream(hf_loss_utils), u8, logits, num_labels, SINGLE), 1e-6)


def test_int32_class_indices_work_where_upstream_fails(hf_loss_utils):
    """Upstream infers single-label for torch.int, then PyTorch's cross-entropy refuses int32 targets."""
    labels, logits, num_labels = _make("single", 5, 5, torch.float32)
    with pytest.raises(RuntimeError, match="Int"):
        upstream(hf_loss_utils)(labels.int(), logits, num_labels)
    ours = _run(sequence_classification_loss, labels.int(), logits, num_labels)
    _assert_same(ours, _run(upstream(hf_loss_utils), labels, logits, num_labels), 1e-6)


@pytest.mark.parametrize("num_labels", [1, 2, 5])
@pytest.mark.parametrize(
    "dtype", [torch.long, torch.int, torch.int16, torch.int8, torch.uint8, torch.bool, torch.float16, torch.float32]
)
def test_infer_problem_type_is_what_upstream_writes_into_its_config(hf_loss_utils, num_labels, dtype):
    labels = torch.zeros(3, num_labels, dtype=dtype)
    config = SimpleNamespace(num_labels=num_labels, problem_type=None)
    try:
        hf_loss_utils.ForSequenceClassificationLoss(labels, torch.zeros(3, num_labels), config)
    except (RuntimeError, ValueError):
        pass  # the inference is written before the loss fails
    assert infer_problem_type(num_labels, labels) == config.problem_type


def test_lossbook_mutates_nothing():
    labels, logits, _ = _make("single", 4, 0, torch.float32)
    before = (labels.clone(), logits.clone())
    sequence_classification_loss(labels, logits, 4)
    assert torch.equal(labels, before[0]) and torch.equal(logits, before[1])


# ---- float64: autograd against finite differences, and sympy against lossbook


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck(kind):
    labels, logits, num_labels = _make(kind, 3, 7, torch.float64, torch.float64 if kind != "single" else None)
    problem_type = KINDS[kind]
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: sequence_classification_loss(labels, z, num_labels, problem_type),
                                    (logits,))
    if kind != "multi" and labels.is_floating_point():  # multi-hot 0/1 labels sit on the edge of [0, 1]
        labels.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda y: sequence_classification_loss(y, logits.detach(), num_labels, problem_type), (labels,))


def _lambdified(expr, args):
    return sp.lambdify(args, expr, "math")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sympy_mse_equals_lossbook(seed):
    labels, logits, _ = _make("reg1", 4, seed, torch.float64, torch.float64)
    z, y = dsc.symbols(4, "z"), dsc.symbols(4, "y")
    point = logits.view(-1).tolist() + labels.tolist()
    leaf = logits.clone().requires_grad_(True)
    loss = sequence_classification_loss(labels, leaf, 1)
    loss.backward()
    assert loss.item() == pytest.approx(_lambdified(dsc.mse(z, y), z + y)(*point), abs=1e-12)
    closed = [_lambdified(gi, z + y)(*point) for gi in dsc.mse_grad(z, y)]
    by_sympy = [_lambdified(sp.diff(dsc.mse(z, y), zi), z + y)(*point) for zi in z]
    torch.testing.assert_close(leaf.grad.view(-1), torch.tensor(by_sympy, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(leaf.grad.view(-1), torch.tensor(closed, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sympy_multi_label_bce_equals_lossbook(seed):
    labels, logits, _ = _make("soft", 2, seed, torch.float64, torch.float64)  # [2, 5] each
    zs = [dsc.symbols(5, "a"), dsc.symbols(5, "b")]
    ys = [dsc.symbols(5, "p"), dsc.symbols(5, "q")]
    args = zs[0] + zs[1] + ys[0] + ys[1]
    point = logits.view(-1).tolist() + labels.view(-1).tolist()
    expr = dsc.multi_label_bce(zs, ys)
    leaf = logits.clone().requires_grad_(True)
    loss = sequence_classification_loss(labels, leaf, 5)
    loss.backward()
    assert loss.item() == pytest.approx(_lambdified(expr, args)(*point), abs=1e-12)
    by_sympy = torch.tensor([_lambdified(sp.diff(expr, zi), args)(*point) for zi in zs[0] + zs[1]],
                            dtype=torch.float64)
    torch.testing.assert_close(leaf.grad.view(-1), by_sympy, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sympy_cross_entropy_equals_lossbook_single_label(seed):
    labels, logits, _ = _make("single", 1, seed, torch.float64)
    z, y = d.logit_symbols(4), int(labels[0])
    point = logits[0].tolist()
    leaf = logits.clone().requires_grad_(True)
    loss = sequence_classification_loss(labels, leaf, 4)
    loss.backward()
    assert loss.item() == pytest.approx(_lambdified(d.cross_entropy(z, y), z)(*point), abs=1e-12)
    closed = torch.tensor([_lambdified(g, z)(*point) for g in d.cross_entropy_grad(z, y)], dtype=torch.float64)
    torch.testing.assert_close(leaf.grad[0], closed, atol=1e-12, rtol=0)


def test_derivations():
    z, y = sp.symbols("z y", real=True)
    bce = dsc.binary_cross_entropy(z, y)
    assert sp.simplify(sp.diff(bce, z) - dsc.binary_cross_entropy_grad(z, y)) == 0
    assert sp.simplify(bce - dsc.binary_cross_entropy_softplus(z, y)) == 0
    assert sp.simplify(dsc.bce_as_two_class_cross_entropy(z, y) - bce) == 0
    assert sp.simplify(sp.diff(bce, z) - (dsc.sigmoid(z) + y)) != 0  # a sign error is caught
    zs, ys = dsc.symbols(3, "z"), dsc.symbols(3, "y")
    loss = dsc.mse(zs, ys)
    assert all(sp.simplify(sp.diff(loss, zi) - g) == 0 for zi, g in zip(zs, dsc.mse_grad(zs, ys)))
    trap = dsc.broadcast_mse(zs, ys)
    assert sp.simplify(trap - loss - 2 * dsc.covariance(zs, ys)) == 0
    assert all(sp.simplify(sp.diff(trap, zi) - 2 * (zi - sum(ys) / 3) / 3) == 0 for zi in zs)
    # the broadcast loss sees only the marginals: Var(z) + Var(y) + (mean z - mean y)^2, whatever the pairing
    assert sp.simplify(trap - dsc.broadcast_mse_moments(zs, ys)) == 0
    swapped = [ys[1], ys[2], ys[0]]
    assert sp.simplify(dsc.broadcast_mse(zs, swapped) - trap) == 0
    assert sp.simplify(dsc.mse(zs, swapped) - loss) != 0 and dsc.mse([1, 2, 3], [3, 1, 2]) == 2
    # the old claim (the better the tracking, the larger the broadcast loss) fails at a point
    perfect, reversed_ = [1, 2, 3], [3, 2, 1]
    assert dsc.broadcast_mse(perfect, [1, 2, 3]) == dsc.broadcast_mse(reversed_, [1, 2, 3]) == sp.Rational(4, 3)
    w = sp.Symbol("w", positive=True)
    assert dsc.variance([1, 2, 3]) == sp.Rational(2, 3)
    assert dsc.bce_pos_weight(z, y, 1) == dsc.binary_cross_entropy(z, y)
    assert sp.simplify(sp.diff(dsc.bce_pos_weight(z, y, w), z) - ((1 + (w - 1) * y) * dsc.sigmoid(z) - w * y)) == 0


# ---- bad inputs: clear errors naming the argument and the shapes


BAD = [
    # (labels, logits, num_labels, problem_type, error, message); upstream would accept the first five silently
    (torch.randn(3), torch.randn(1, 1), 1, None, ValueError, r"pooled_logits \[1, 1\] and labels \[3\] squeeze"),
    (torch.randn(2), torch.randn(2, 2), 2, REG, ValueError, r"shape of pooled_logits \[2, 2\], got \[2\]"),
    (torch.randn(4, 1), torch.randn(4, 2), 2, REG, ValueError, r"shape of pooled_logits \[4, 2\], got \[4, 1\]"),
    (torch.zeros(12, dtype=torch.long), torch.randn(4, 6), 2, None, ValueError, r"\[batch, 2\], got \[4, 6\]"),
    (torch.full((1, 3), -100.0), torch.randn(1, 3), 3, None, ValueError, r"\[0, 1\].*-100, .*shape \[1, 3\]"),
    (torch.randn(4, 3), torch.randn(4, 3), 1, None, ValueError, r"\[batch, 1\], got \[4, 3\]"),
    (torch.zeros(2, 2, dtype=torch.long), torch.randn(4, 3), 3, None, ValueError, r"shape \[4\].*got \[2, 2\]"),
    (torch.zeros(3, dtype=torch.long), torch.randn(4, 3), 3, None, ValueError, r"\[4, 3\].*got \[3\]"),
    (torch.tensor([0, 5, 1, 2]), torch.randn(4, 3), 3, None, ValueError, r"class index 5, outside \[0, 3\)"),
    (torch.rand(4), torch.randn(4, 3), 3, SINGLE, TypeError, r"labels must hold integer .*float32 with shape \[4\]"),
    (torch.zeros(4, dtype=torch.int8), torch.randn(4, 3), 3, None, TypeError, r"torch.int8 with shape \[4\]"),
    (torch.zeros(4, 3, dtype=torch.uint8), torch.randn(4, 3), 3, None, TypeError, r"torch.uint8 with shape \[4, 3\]"),
    (torch.zeros(4, 3, dtype=torch.bool), torch.randn(4, 3), 3, None, TypeError, r"torch.bool .*labels.float\(\)"),
    (torch.zeros(4, 3, dtype=torch.long), torch.randn(4, 3), 3, MULTI, TypeError, r"torch.int64 with shape \[4, 3\]"),
    (torch.rand(4, 1), torch.randn(4, 3), 3, None, ValueError, r"pooled_logits \[4, 3\], got \[4, 1\]"),
    (torch.tensor([0.0, 2.0, 1.0, 1.0]), torch.randn(4, 3), 3, None, ValueError,
     r"got \[4\]: one torch.float32 label per row.*class indices.*labels.long\(\)"),  # float class ids
    (torch.rand(2, 3), torch.randn(4, 3), 3, None, ValueError, r"shape of pooled_logits \[4, 3\], got \[2, 3\] \(the"),
    (torch.zeros(4, dtype=torch.long), torch.randn(4, 3), 3, "classification", ValueError,
     r"'regression', 'single_label_classification', 'multi_label_classification'.*'classification'"),
    (torch.zeros(4, dtype=torch.long), torch.randn(4, 3), 0, None, ValueError, r"num_labels must be at least 1"),
    (torch.zeros(4, dtype=torch.long), torch.randn(4, 3), 3.0, None, TypeError, r"num_labels must be an int"),
    (None, torch.randn(4, 3), 3, None, TypeError, r"labels must be a torch.Tensor, got NoneType"),
    (torch.zeros(4, dtype=torch.long), torch.zeros(4, 3, dtype=torch.long), 3, None, TypeError,
     r"pooled_logits must be a floating-point .*int64 with shape \[4, 3\]"),
]


@pytest.mark.parametrize("labels,logits,num_labels,problem_type,error,message", BAD)
def test_bad_input_gets_a_clear_error(labels, logits, num_labels, problem_type, error, message):
    with pytest.raises(error, match=message):
        sequence_classification_loss(labels, logits, num_labels, problem_type)


@pytest.mark.parametrize("case", BAD[:5], ids=["batch1-squeeze", "2x2-vs-2", "b2-vs-b1", "view", "minus100"])
def test_upstream_accepts_the_refused_shapes_silently(hf_loss_utils, case):
    """The refusals above are not hypothetical: upstream returns a number for each (at most with a warning)."""
    labels, logits, num_labels, problem_type = case[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value = upstream(hf_loss_utils)(labels, logits, num_labels, problem_type)
    assert torch.isfinite(value)


# ---- the broadcasting trap, the bug zoo


def test_broadcasting_trap_is_mse_plus_twice_the_covariance():
    g = torch.Generator().manual_seed(0)
    pred, y = torch.randn(6, 1, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        naive = F.mse_loss(pred, y)  # [6, 1] vs [6] -> [6, 6]
    assert any("broadcasting" in str(w.message) for w in caught)
    right = sequence_classification_loss(y, pred, 1)
    z = pred.view(-1)
    cov = ((z - z.mean()) * (y - y.mean())).mean()
    torch.testing.assert_close(naive, right + 2 * cov)
    torch.testing.assert_close(zoo.broadcasting_mse(y, pred, 1), naive)


BUGS = [zoo.broadcasting_mse, zoo.bce_of_probabilities, zoo.softmax_across_labels, zoo.onehot_float_labels]


@pytest.mark.parametrize("bug", BUGS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_bug_fails_against_lossbook(bug, seed):
    result = compare_losses(bug, sequence_classification_loss, demo.sequence_classification_cases(seed))
    assert not result.passed, result


@pytest.mark.parametrize("dtype", list(TOL))
def test_lossbook_passes_the_same_check_against_transformers(hf_loss_utils, dtype):
    cases = demo.sequence_classification_cases(0, dtype=dtype)
    assert {infer_problem_type(c["num_labels"], c["labels"]) for c in cases} == set(PROBLEM_TYPES)
    # half precision: the single-label mean may differ by one ulp (lossbook reduces in float32); 8 eps covers
    # one ulp of losses below 8, and test_parity_with_transformers checks the gradients exactly
    atol = 0.0 if dtype == torch.float32 else 8 * torch.finfo(dtype).eps
    result = compare_losses(sequence_classification_loss, upstream(hf_loss_utils), cases, atol=atol)
    assert result.passed, result


# ---- the explorer shows what lossbook computes


@pytest.mark.parametrize("problem_type", PROBLEM_TYPES)
@pytest.mark.parametrize("batch", [1, 3])
def test_explorer_follows_sliders(problem_type, batch):
    ex = SequenceClassificationExplorer(problem_type=SINGLE, logits=(1.0, -0.5, 0.3))
    ex.problem.value = problem_type
    ex.batch.value = batch
    ex.sliders[0].value = 2.5
    ex.target.value = -1.0
    ex.target_class.value = 2
    ex.targets[1].value = 0.75
    z, labels, num_labels = ex.tensors()
    assert z[0, 0].item() == 2.5 and z.shape[0] == batch
    leaf = z.clone().requires_grad_(True)
    expected = sequence_classification_loss(labels, leaf, num_labels, problem_type)
    expected.backward()
    assert ex.loss == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(torch.tensor(ex.grad, dtype=torch.float64), leaf.grad[0])
    torch.testing.assert_close(torch.tensor(ex.closed_form, dtype=torch.float64), leaf.grad[0])
    assert f">{expected.item():.4f}<" in ex.html.value
    assert ex.steps[0] == ("pooled_logits", [batch, num_labels]) and ex.steps[-1][1] == []


def test_explorer_regression_shows_the_squeeze_and_the_trap():
    ex = SequenceClassificationExplorer(problem_type=REG)
    assert dict(ex.steps)["pooled_logits.squeeze()"] == []  # batch 1: 0-dim
    ex.batch.value = 4
    assert dict(ex.steps)["pooled_logits.squeeze()"] == [4]
    z, labels, _ = ex.tensors()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = F.mse_loss(z, labels).item()
    assert ex.naive == pytest.approx(naive) and f"{naive:.4f}" in ex.html.value and "[4, 4]" in ex.html.value


# ---- demo helpers


def test_sequence_tasks_shapes_and_determinism():
    a = demo.make_sequence_tasks(50, seq=8, generator=torch.Generator().manual_seed(0))
    b = demo.make_sequence_tasks(50, seq=8, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    tokens, y_reg, y_single, y_multi = a
    assert tokens.shape == (50, 8) and y_reg.shape == (50,) and y_single.shape == (50,)
    assert y_multi.shape == (50, demo.NUM_TAGS) and y_reg.dtype == torch.float32 and y_single.dtype == torch.long
    assert infer_problem_type(1, y_reg) == REG
    assert infer_problem_type(demo.NUM_CLASSES, y_single) == SINGLE
    assert infer_problem_type(demo.NUM_TAGS, y_multi) == MULTI
    assert set(y_single.tolist()) <= set(range(demo.NUM_CLASSES)) and set(y_multi.unique().tolist()) <= {0.0, 1.0}
    row = tokens[0]
    assert y_multi[0].tolist() == [float((row == k).any()) for k in range(demo.NUM_TAGS)]
    assert y_reg[0].item() == (((row >= 5) & (row < 10)).sum() - (row >= 15).sum()).item() / 2


def test_multitask_model_shapes_and_losses():
    tokens, y_reg, y_single, y_multi = demo.make_sequence_tasks(6, generator=torch.Generator().manual_seed(1))
    reg, single, multi = demo.MultiTaskClassifier()(tokens)
    assert reg.shape == (6, 1) and single.shape == (6, demo.NUM_CLASSES) and multi.shape == (6, demo.NUM_TAGS)
    for labels, logits, n in [(y_reg, reg, 1), (y_single, single, demo.NUM_CLASSES), (y_multi, multi, demo.NUM_TAGS)]:
        assert torch.isfinite(sequence_classification_loss(labels, logits, n))


def test_metrics():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert demo.r2_score(y.view(4, 1), y) == 1.0 and demo.r2_score(torch.full((4,), 2.5), y) == 0.0
    logits = torch.tensor([[2.0, -1.0], [-3.0, 1.0]])
    assert demo.accuracy(logits, torch.tensor([0, 0])) == 0.5
    multi = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert demo.per_label_accuracy(logits, multi) == 0.75 and demo.exact_match(logits, multi) == 0.5
    with pytest.raises(ValueError, match=r"pred \[4, 2\] and target \[4\]"):
        demo.r2_score(torch.zeros(4, 2), y)


def test_errors_name_the_callers_arguments():
    with pytest.raises(ValueError, match=r"^labels holds class index 7, outside \[0, 3\)"):
        sequence_classification_loss(torch.tensor([0, 7]), torch.randn(2, 3), 3)
    with pytest.raises(TypeError, match=r"^ignore_index must be an int"):
        sequence_classification_loss(torch.tensor([0, 1]), torch.randn(2, 3), 3, ignore_index=None)


def test_single_label_half_precision_mean_does_not_overflow(hf_loss_utils):
    g = torch.Generator().manual_seed(0)
    logits = (20 * torch.randn(8000, 50, generator=g)).half()  # [batch, classes]: losses around 40
    labels = torch.randint(0, 50, (8000,), generator=g)
    exact = F.cross_entropy(logits.double(), labels)
    ours = sequence_classification_loss(labels, logits, 50)
    assert ours.dtype == torch.float16 and abs(float(ours) - float(exact)) < 4e-3 * float(exact)
    assert torch.isinf(upstream(hf_loss_utils)(labels, logits, 50))  # upstream's float16 sum overflows


# --- last-token pooling (second edition) ---------------------------------------------------------------------


def test_last_token_pool_equals_llama_for_sequence_classification(hf_loss_utils):
    from lossbook.sequence_classification import last_token_pool, last_token_positions

    model = demo.tiny_llama_classifier(vocab_size=32, num_labels=3, pad_token_id=0)
    g = torch.Generator().manual_seed(0)
    for side in ("right", "left"):
        ids, mask = demo.padded_batch([7, 3, 9, 1], 9, side=side, generator=g)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2, 1, 1]))
            per_position = model.score(model.model(input_ids=ids, attention_mask=mask).last_hidden_state)
        pooled = last_token_pool(per_position, ids, pad_token_id=0)  # [batch, 3]
        assert torch.equal(pooled, out.logits)
        expected = [6, 2, 8, 0] if side == "right" else [8, 8, 8, 8]
        assert last_token_positions(ids, 0).tolist() == expected
        assert sequence_classification_loss(torch.tensor([0, 2, 1, 1]), pooled, 3).item() == out.loss.item()
        naive = per_position[:, -1]  # [batch, 3]: the classic bug
        assert torch.equal(naive, out.logits) == (side == "left")


def test_last_token_positions_refuses_what_upstream_pools_silently():
    from lossbook.sequence_classification import last_token_pool, last_token_positions

    ids = torch.tensor([[5, 6, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] .* hold only pad_token_id=0"):
        last_token_positions(ids, 0)
    with pytest.raises(TypeError, match="input_ids must hold integer token ids"):
        last_token_positions(ids.float(), 0)
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, seq\]"):
        last_token_positions(ids[0], 0)
    with pytest.raises(ValueError, match=r"logits must be \[batch, seq, num_labels\]"):
        last_token_pool(torch.zeros(2, 4, 3), torch.tensor([[5, 6, 0], [1, 0, 0]]), 0)
    # a pad id that is also a real end-of-sequence token: the row is pooled before it, as upstream
    assert last_token_positions(torch.tensor([[4, 5, 2, 2]]), pad_token_id=2).tolist() == [1]


def test_majority_baselines():
    train = demo.make_sequence_tasks(2000, generator=torch.Generator().manual_seed(0))
    test = demo.make_sequence_tasks(500, generator=torch.Generator().manual_seed(1))
    base = demo.majority_baselines(train, test)
    assert abs(base["r2"]) < 0.02
    counts = torch.bincount(test[2], minlength=demo.NUM_CLASSES).float()
    assert 0.25 <= base["accuracy"] <= float(counts.max() / counts.sum()) + 1e-9
    assert 0.0 <= base["exact_match"] <= base["label_accuracy"] <= 1.0


def test_explorer_controls_wrap_above_the_tables():
    ex = SequenceClassificationExplorer()
    controls, table = ex.children
    assert controls.layout.flex_flow == "row wrap" and table is ex.html


def test_count_regression_baseline_is_exact_on_a_linear_target():
    train = demo.make_sequence_tasks(500, generator=torch.Generator().manual_seed(0))
    test = demo.make_sequence_tasks(200, generator=torch.Generator().manual_seed(1))
    assert demo.count_regression_baseline(train, test) > 0.999
    shuffled = (train[0], train[1][torch.randperm(500, generator=torch.Generator().manual_seed(2))], *train[2:])
    assert demo.count_regression_baseline(shuffled, test) < 0.2


def _verdicts(check, answer, capsys):
    out = []
    for _ in range(2):  # the same verdict when run twice
        check(answer)
        out.append(capsys.readouterr().out)
    assert out[0] == out[1]
    return out[0]


def test_exercise_checks_accept_right_answers_and_fail_wrong_ones(capsys):
    def flipped(ids, pad):
        return ids.shape[-1] - 1 - (ids != pad).int().flip(-1).argmax(-1)

    assert "not attempted" in _verdicts(demo.check_last_token_positions, ..., capsys)
    assert ": correct" in _verdicts(demo.check_last_token_positions, flipped, capsys)
    assert "not yet" in _verdicts(demo.check_last_token_positions, lambda ids, pad: (ids != pad).sum(-1) - 1, capsys)
    assert "raised" in _verdicts(demo.check_last_token_positions, lambda ids: ids, capsys)

    z, y, w = sp.symbols("z y w")
    assert ": correct" in _verdicts(demo.check_pos_weight_grad, (1 + (w - 1) * y) * dsc.sigmoid(z) - w * y, capsys)
    assert "not yet" in _verdicts(demo.check_pos_weight_grad, dsc.sigmoid(z) - y, capsys)
    assert "not yet" in _verdicts(demo.check_pos_weight_grad, w * (dsc.sigmoid(z) - y), capsys)
    assert "only the symbols" in _verdicts(demo.check_pos_weight_grad, sp.Symbol("x"), capsys)

    assert ": correct" in _verdicts(demo.check_same_broadcast_loss, [3, 2, 1], capsys)
    for wrong in ([1, 2, 3], [2, 2, 2], [4, 5, 6]):
        assert "not yet" in _verdicts(demo.check_same_broadcast_loss, wrong, capsys)
