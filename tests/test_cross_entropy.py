"""fixed_cross_entropy against transformers, PyTorch, sympy and autograd."""

import numpy as np
import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from _half import assert_loss_close

from lossbook import derivations, fixed_cross_entropy
from lossbook.checks import compare_losses, cross_entropy_cases


def _idx(*shape):
    return torch.zeros(*shape, dtype=torch.long)


# half precision: gradients exact (the same kernels), values within one ulp (lossbook reduces in float32)
DTYPES = {torch.float32: 1e-6, torch.bfloat16: 0.0, torch.float16: 0.0}


def _inputs(seed, items, classes, ignored, dtype, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    source = (scale * torch.randn(items, classes, generator=g)).to(dtype)
    target = torch.randint(0, classes, (items,), generator=g)
    target[torch.randperm(items, generator=g)[:ignored]] = -100
    return source, target


def _value_and_grad(fn, source, target, **kwargs):
    leaf = source.detach().clone().requires_grad_(True)
    loss = fn(leaf, target, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("items,classes,ignored", [(1, 2, 0), (1, 50, 0), (7, 5, 3), (64, 13, 20), (2, 3, 1)])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("num_items", [None, 11, "tensor"])
def test_parity_with_transformers(hf_loss_utils, seed, items, classes, ignored, dtype, num_items):
    source, target = _inputs(seed, items, classes, ignored, dtype)
    if num_items == "tensor":
        num_items = torch.tensor(items + 3)
    ours = _value_and_grad(fixed_cross_entropy, source, target, num_items_in_batch=num_items)
    theirs = _value_and_grad(hf_loss_utils.fixed_cross_entropy, source, target, num_items_in_batch=num_items)
    tol = DTYPES[dtype]
    assert_loss_close(ours[0], theirs[0], tol)
    torch.testing.assert_close(ours[1], theirs[1], atol=tol, rtol=tol)


@pytest.mark.parametrize("ignore_index", [-100, 0, 4, np.int64(-100)])
def test_parity_for_other_ignore_index(hf_loss_utils, ignore_index):
    source, target = _inputs(5, 10, 6, 0, torch.float32)
    target[::3] = ignore_index
    ours = _value_and_grad(fixed_cross_entropy, source, target, ignore_index=ignore_index)
    theirs = _value_and_grad(hf_loss_utils.fixed_cross_entropy, source, target, ignore_index=ignore_index)
    torch.testing.assert_close(ours, theirs)


def test_extreme_logits_are_finite_and_match(hf_loss_utils):
    source = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0], [1e4, -1e4, 0.0]])
    target = torch.tensor([1, 0, 0])
    ours = _value_and_grad(fixed_cross_entropy, source, target)
    theirs = _value_and_grad(hf_loss_utils.fixed_cross_entropy, source, target)
    assert torch.isfinite(ours[0]) and torch.isfinite(ours[1]).all()
    torch.testing.assert_close(ours, theirs)
    # closed form: (logsumexp - z_y) averaged; row 0 -> 200, row 1 -> 200, row 2 -> 0
    assert ours[0].item() == pytest.approx(400 / 3, rel=1e-6)


def test_all_ignored_is_nan_without_count_and_zero_with_one(hf_loss_utils):
    source = torch.randn(4, 5)
    target = torch.full((4,), -100)
    value, grad = _value_and_grad(fixed_cross_entropy, source, target)
    assert torch.isnan(value) and torch.isnan(hf_loss_utils.fixed_cross_entropy(source, target))
    assert torch.equal(grad, torch.zeros_like(grad))  # documented: NaN value, zero gradient
    value, grad = _value_and_grad(fixed_cross_entropy, source, target, num_items_in_batch=7)
    assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_unbatched_and_empty_inputs_match_upstream(hf_loss_utils):
    z, y = torch.randn(5), torch.tensor(2)
    torch.testing.assert_close(fixed_cross_entropy(z, y), hf_loss_utils.fixed_cross_entropy(z, y))
    empty_z, empty_y = torch.randn(0, 3), torch.zeros(0, dtype=torch.long)
    assert fixed_cross_entropy(empty_z, empty_y, num_items_in_batch=1).item() == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_gradcheck_float64(seed):
    source, target = _inputs(seed, 6, 4, 2, torch.float64)
    source.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: fixed_cross_entropy(s, target), (source,))
    assert torch.autograd.gradcheck(lambda s: fixed_cross_entropy(s, target, num_items_in_batch=9), (source,))
    assert torch.autograd.gradcheck(lambda s: fixed_cross_entropy(s, target, label_smoothing=0.2), (source,))


@pytest.mark.parametrize("seed", range(3))
def test_sympy_value_and_gradient_equal_lossbook(seed):
    classes, items = 4, 5
    z = derivations.logit_symbols(classes)
    source, target = _inputs(seed, items, classes, 2, torch.float64)
    leaf = source.clone().requires_grad_(True)
    fixed_cross_entropy(leaf, target).backward()
    kept = int((target != -100).sum())
    total = 0.0
    for i, (row, y) in enumerate(zip(source.tolist(), target.tolist())):
        if y == -100:  # an ignored row gets no gradient
            assert torch.equal(leaf.grad[i], torch.zeros(classes, dtype=torch.float64))
            continue
        total += sp.lambdify(z, derivations.cross_entropy(z, y))(*row)
        grad = [sp.lambdify(z, g)(*row) for g in derivations.cross_entropy_grad(z, y)]
        torch.testing.assert_close(leaf.grad[i], torch.tensor(grad, dtype=torch.float64) / kept)
    assert fixed_cross_entropy(source, target).item() == pytest.approx(total / kept, rel=1e-12)


def test_label_smoothing_is_forwarded_and_matches_sympy(hf_loss_utils):
    eps = sp.Rational(1, 10)
    z = derivations.logit_symbols(3)
    row, y = [0.5, -1.0, 2.0], 1
    expected = float(sp.lambdify(z, derivations.label_smoothed_cross_entropy(z, y, eps))(*row))
    source, target = torch.tensor([row], dtype=torch.float64), torch.tensor([y])
    assert fixed_cross_entropy(source, target, label_smoothing=0.1).item() == pytest.approx(expected, rel=1e-12)
    # transformers drops label_smoothing (its **kwargs are not forwarded): the chapter says so
    assert hf_loss_utils.fixed_cross_entropy(source, target, label_smoothing=0.1).item() == pytest.approx(
        fixed_cross_entropy(source, target).item()
    )


def test_shared_check_cases_pass_against_plain_pytorch():
    reference = lambda source, target, ignore_index: F.cross_entropy(source, target, ignore_index=ignore_index)
    result = compare_losses(fixed_cross_entropy, reference, cross_entropy_cases(0))
    assert result.passed, result


# ---- bad input: clear errors naming the argument and the shapes -------------------------------------------------


@pytest.mark.parametrize(
    "source,target,kwargs,error,message",
    [
        (torch.randn(2, 3, 5), _idx(2, 3), {}, ValueError, r"source must be .*got shape \[2, 3, 5\]"),
        (torch.randn(4, 5), _idx(3), {}, ValueError, r"target must have shape \[4\].*got \[3\]"),
        (torch.randn(4, 5), _idx(4, 1), {}, ValueError, r"got \[4, 1\]"),
        (torch.randn(4, 5), torch.tensor([0, 1, 5, 2]), {}, ValueError, r"index 5, outside \[0, 5\).*shape \[4\]"),
        (torch.randn(4, 5), torch.tensor([0, -1, 2, 2]), {}, ValueError, r"class index -1"),
        (torch.randn(4, 5), torch.zeros(4), {}, TypeError, r"target must hold integer .*float32 with shape \[4\]"),
        (_idx(4, 5), _idx(4), {}, TypeError, r"source must be a floating"),
        (torch.randn(4, 5), _idx(4), {"num_items_in_batch": 0}, ValueError, "must be a positive, finite count, got 0"),
        (torch.randn(4, 5), _idx(4), {"num_items_in_batch": torch.ones(2)}, ValueError, r"shape \[2\]"),
        (torch.randn(4, 5), _idx(4), {"reduction": "sum"}, TypeError, "num_items_in_batch"),
        ([[0.0, 1.0]], _idx(1), {}, TypeError, "source must be a torch.Tensor"),
    ],
)
def test_bad_input_errors_name_argument_and_shapes(source, target, kwargs, error, message):
    with pytest.raises(error, match=message):
        fixed_cross_entropy(source, target, **kwargs)


def test_out_of_range_ignored_value_is_fine():
    # ignore_index itself may lie outside [0, classes): question answering uses ignore_index = seq length
    source = torch.randn(3, 4)
    loss = fixed_cross_entropy(source, torch.tensor([0, 4, 1]), ignore_index=4)
    assert loss.item() == pytest.approx(F.cross_entropy(source[[0, 2]], torch.tensor([0, 1])).item())


# ---- hardening: counts, argument names, half-precision reductions, NaN rows at ignored positions


@pytest.mark.parametrize(
    ("count", "error", "message"),
    [
        (torch.tensor(-3), ValueError, r"num_items_in_batch must be a positive, finite count, got -3"),
        (torch.tensor(0), ValueError, r"positive, finite count, got 0"),
        (torch.tensor(float("nan")), ValueError, r"positive, finite count, got nan"),
        (torch.tensor(float("inf")), ValueError, r"positive, finite count, got inf"),
        (torch.tensor(True), TypeError, r"num_items_in_batch must be a count .* got dtype torch.bool"),
        (torch.tensor(2 + 0j), TypeError, r"got dtype torch.complex64"),
        (float("nan"), ValueError, r"positive, finite count, got nan"),
        (float("inf"), ValueError, r"positive, finite count, got inf"),
        (-2.5, ValueError, r"positive, finite count, got -2.5"),
        (True, TypeError, r"num_items_in_batch must be an int or a one-element tensor, got bool"),
    ],
)
def test_every_bad_count_is_an_error(count, error, message):
    source, target = _inputs(0, 6, 4, 2, torch.float32)
    with pytest.raises(error, match=message):
        fixed_cross_entropy(source, target, num_items_in_batch=count)


def test_a_count_on_an_accelerator_is_checked_from_metadata_only():
    from lossbook._checks import check_count

    on_device = torch.tensor(-1.0, device="meta")  # reading its value would raise: the check must not read it
    assert check_count("num_items_in_batch", on_device) is on_device
    with pytest.raises(ValueError, match="single count"):
        check_count("num_items_in_batch", torch.ones(2, device="meta"))
    with pytest.raises(TypeError, match="torch.bool"):
        check_count("num_items_in_batch", torch.tensor(True, device="meta"))


@pytest.mark.parametrize("ignore_index", [None, 1.5, "x", True])
def test_ignore_index_must_be_an_int(ignore_index):
    source, target = _inputs(0, 6, 4, 0, torch.float32)
    with pytest.raises(TypeError, match=r"ignore_index must be an int .* got " + type(ignore_index).__name__):
        fixed_cross_entropy(source, target, ignore_index=ignore_index)


def test_weight_is_checked_and_follows_the_logits_dtype():
    source, target = _inputs(0, 6, 4, 1, torch.float32)
    with pytest.raises(ValueError, match=r"weight must have shape \[4\] \(one weight per class of source \[6, 4\]\)"):
        fixed_cross_entropy(source, target, weight=torch.ones(3))
    with pytest.raises(TypeError, match=r"weight must be a floating-point tensor of shape \[4\].*torch.int64"):
        fixed_cross_entropy(source, target, weight=torch.ones(4, dtype=torch.long))
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)  # another dtype: cast, not an obscure error
    expected = F.cross_entropy(source, target, weight=weight.float(), ignore_index=-100)
    torch.testing.assert_close(fixed_cross_entropy(source, target, weight=weight), expected)


def _realistic_half_batch(dtype, items=8000, classes=50):
    g = torch.Generator().manual_seed(0)
    source = (20 * torch.randn(items, classes, generator=g)).to(dtype)  # per-item losses around 40
    target = torch.randint(0, classes, (items,), generator=g)
    return source, target


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("num_items", [None, 8000])
def test_half_precision_mean_is_finite_where_upstreams_sum_overflows(hf_loss_utils, dtype, num_items):
    source, target = _realistic_half_batch(dtype)
    exact = F.cross_entropy(source.double(), target, reduction="sum") / 8000  # the true mean, in float64
    ours = fixed_cross_entropy(source, target, num_items_in_batch=num_items)
    theirs = hf_loss_utils.fixed_cross_entropy(source, target, num_items_in_batch=num_items)
    assert ours.dtype == dtype and torch.isfinite(ours)
    assert abs(float(ours) - float(exact)) / float(exact) < 4 * torch.finfo(dtype).eps  # per-item rounding only
    if dtype == torch.float16:
        assert torch.isinf(theirs)  # upstream: a float16 sum of 8000 losses near 40 overflows 65504


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("count", [torch.tensor(17.0), torch.tensor(17.0, dtype=torch.float64), torch.tensor(17),
                                   17, 17.0])
def test_half_precision_returns_upstreams_dtype(hf_loss_utils, dtype, count):
    """Upstream's half loss / num_items_in_batch promotes: float32 for a float32 tensor count, half for an int."""
    source, target = _inputs(0, 17, 11, 0, dtype)
    ours = _value_and_grad(fixed_cross_entropy, source, target, num_items_in_batch=count)
    theirs = _value_and_grad(hf_loss_utils.fixed_cross_entropy, source, target, num_items_in_batch=count)
    assert ours[0].dtype == theirs[0].dtype == torch.result_type(torch.zeros((), dtype=dtype), count)
    exact = float(F.cross_entropy(source.double(), target, reduction="sum")) / 17
    for value in (ours[0], theirs[0]):  # each within the half rounding of the per-item losses or of the sum
        assert abs(float(value) - exact) <= torch.finfo(dtype).eps * exact, (float(value), exact)
    torch.testing.assert_close(ours[1], theirs[1], atol=0.0, rtol=0.0)  # the same kernels: the same gradient


def test_half_precision_weighted_mean_matches_float32():
    source, target = _inputs(3, 40, 6, 10, torch.float32)
    weight = torch.rand(6, generator=torch.Generator().manual_seed(1)) + 0.5
    for smoothing in (0.0, 0.1):
        expected = fixed_cross_entropy(source.half().float(), target, weight=weight, label_smoothing=smoothing)
        got = fixed_cross_entropy(source.half(), target, weight=weight, label_smoothing=smoothing)
        assert abs(float(got) - float(expected)) <= 2e-3 * float(expected)


def test_nan_logits_at_an_ignored_row_give_a_finite_loss_and_a_nan_gradient_row_as_upstream(hf_loss_utils):
    """Documented in fixed_cross_entropy, causal_lm_loss, masked_lm_loss and token_classification_loss."""
    source, target = _inputs(0, 4, 5, 0, torch.float32)
    source[1] = float("nan")
    target[1] = -100
    ours = _value_and_grad(fixed_cross_entropy, source, target)
    theirs = _value_and_grad(hf_loss_utils.fixed_cross_entropy, source, target)
    assert torch.isfinite(ours[0]) and torch.equal(ours[0], theirs[0])
    assert torch.isnan(ours[1][1]).all() and torch.isfinite(ours[1][[0, 2, 3]]).all()
    assert torch.equal(torch.isnan(ours[1]), torch.isnan(theirs[1]))


def test_weight_with_num_items_in_batch_is_refused_because_accumulation_would_be_wrong():
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 2, -100, 0])
    weight = torch.tensor([1.0, 2.0, 5.0])
    with pytest.raises(ValueError, match="weight and num_items_in_batch cannot be combined"):
        fixed_cross_entropy(source, target, num_items_in_batch=5, weight=weight)
    with pytest.raises(ValueError, match="weight and num_items_in_batch cannot be combined"):
        fixed_cross_entropy(source.half(), target, num_items_in_batch=5, weight=weight)
    # why: two micro-batches summed over the shared count do not give the full batch's weighted mean
    full = fixed_cross_entropy(source, target, weight=weight)
    parts = [F.cross_entropy(s, t, weight=weight, reduction="sum") / 5 for s, t in
             zip(source.chunk(2), target.chunk(2))]
    assert abs(float(sum(parts) - full)) > 0.1
    # each alone is still fine
    fixed_cross_entropy(source, target, weight=weight)
    fixed_cross_entropy(source, target, num_items_in_batch=5)


@pytest.mark.parametrize("count", [None, 9])
def test_cross_entropy_from_scratch_equals_fixed_cross_entropy(count):
    from lossbook.cross_entropy import cross_entropy_from_scratch

    for case in cross_entropy_cases(seed=4, dtype=torch.float64):
        case = dict(case, num_items_in_batch=count)
        result = compare_losses(cross_entropy_from_scratch, fixed_cross_entropy, [case], atol=1e-12)
        assert result.passed, result
    with pytest.raises(ValueError, match=r"target must have shape \[4\]"):
        cross_entropy_from_scratch(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))


def test_entropy_plus_kl_is_cross_entropy_and_is_the_smoothing_floor():
    z = derivations.logit_symbols(3)
    eps = sp.Rational(1, 10)
    q = derivations.label_smoothed_target(3, 1, eps)
    p = derivations.softmax(z)
    lhs = derivations.entropy(q) + derivations.kl_divergence(q, p)
    point = {z[0]: 1, z[1]: 3, z[2]: -2}
    value = sp.N((lhs - derivations.label_smoothed_cross_entropy(z, 1, eps)).subs(point), 30)
    assert abs(value) < 1e-25
    # the KL vanishes at p = q: the smoothed loss's minimum is H(q), not 0
    at_q = {z[i]: sp.log(q[i]) for i in range(3)}
    assert sp.simplify(derivations.kl_divergence(q, p).subs(at_q)) == 0
    assert float(sp.N(derivations.entropy(q))) == pytest.approx(0.29114, abs=1e-5)
    wrong = derivations.entropy(q) - derivations.kl_divergence(q, p)
    assert abs(sp.N((wrong - derivations.label_smoothed_cross_entropy(z, 1, eps)).subs(point))) > 1e-3


def test_cosine_similarity_ignores_length():
    from lossbook.accumulation import cosine_similarity

    a = torch.tensor([1.0, 2.0, 3.0])
    assert cosine_similarity(a, 5 * a) == pytest.approx(1.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert cosine_similarity(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(0.0)
