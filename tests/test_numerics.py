import math

import pytest
import torch

from lossbook import numerics


def test_naive_overflows_at_logits_near_100_and_stable_does_not():
    z = torch.tensor([100.0, 99.0, 0.0])
    assert torch.isinf(numerics.logsumexp_naive(z))
    torch.testing.assert_close(numerics.logsumexp_stable(z), torch.logsumexp(z, -1))


def test_naive_log_softmax_underflows():
    z = torch.tensor([0.0, 200.0])
    assert torch.isinf(numerics.log_softmax_naive(z)[0])
    torch.testing.assert_close(numerics.log_softmax_stable(z), torch.log_softmax(z, -1))


@pytest.mark.parametrize("shape,dim", [((5,), -1), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1)])
def test_stable_forms_match_torch(shape, dim):
    z = 30 * torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(numerics.logsumexp_stable(z, dim), torch.logsumexp(z, dim))
    torch.testing.assert_close(numerics.log_softmax_stable(z, dim), torch.log_softmax(z, dim))


def test_all_minus_inf_row():
    z = torch.full((3,), float("-inf"))
    assert numerics.logsumexp_stable(z).item() == float("-inf")


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match=r"z must be a floating-point tensor.*shape \[3\]"):
        numerics.logsumexp_stable(torch.tensor([1, 2, 3]))


def test_exp_limits_are_the_dtype_thresholds():
    """exp rounds to 0 below log(smallest subnormal / 2), not below log(smallest subnormal) (issue 24: -17.33 in
    float16, not -16.64): exp computed exactly (float64) and rounded once to the dtype."""
    expected = {torch.float32: (88.72, -103.97), torch.bfloat16: (88.72, -92.88), torch.float16: (11.09, -17.33)}
    for dtype, (over, under) in expected.items():
        got = numerics.exp_limits(dtype)
        assert got == pytest.approx((over, under), abs=0.005)
        if dtype is not torch.bfloat16:  # bfloat16 inputs are too coarse near 88 to step by 0.01
            assert torch.isfinite(torch.exp(torch.tensor(got[0] - 0.01, dtype=dtype)))
            assert torch.isinf(torch.exp(torch.tensor(got[0] + 0.02, dtype=dtype)))
        exact = lambda x, dtype=dtype: torch.exp(torch.tensor(x, dtype=torch.float64)).to(dtype)  # noqa: E731
        assert exact(got[1] + 1e-3) > 0 and exact(got[1] - 1e-3) == 0
        assert exact(math.log(torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps) - 0.1) > 0  # old claim
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        numerics.exp_limits(torch.int64)


def test_float16_overflows_at_logits_near_12():
    z = torch.tensor([12.0, 11.0, 0.0], dtype=torch.float16)
    assert torch.isinf(numerics.logsumexp_naive(z))
    assert numerics.logsumexp_stable(z).item() == pytest.approx(12.3133, abs=0.01)


def test_log_of_softmax_underflows_without_any_overflow():
    z = torch.tensor([0.0, 120.0])  # float32: the shifted exponents are exp(-120) and exp(0), both finite math
    assert torch.isfinite(torch.exp(z - z.max())).all()
    assert torch.exp(z - z.max())[0] == 0  # ... but exp(-120) rounds to 0: an underflow
    assert numerics.log_of_softmax(z)[0] == float("-inf")
    assert numerics.log_softmax_stable(z)[0].item() == -120.0
    half = torch.tensor([0.0, 20.0], dtype=torch.float16)  # float16 underflows at a gap of ~16.6
    assert numerics.log_of_softmax(half)[0] == float("-inf")
    assert numerics.log_of_softmax(torch.tensor([0.0, 15.0], dtype=torch.float16))[0].isfinite()
