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
