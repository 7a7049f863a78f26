"""k micro-batches equal one full batch only with a shared denominator."""

import pytest
import torch

from lossbook import accumulation, seed_everything
from lossbook.models import MLP


def _micro_batches(kept_counts, dtype, seq=6, vocab=7):
    g = torch.Generator().manual_seed(0)
    batches = []
    for kept in kept_counts:
        x = torch.randn(2, seq, 4, generator=g, dtype=dtype)  # [batch, seq, features]
        y = torch.randint(0, vocab, (2, seq), generator=g)  # [batch, seq]
        y.view(-1)[kept:] = -100
        batches.append((x, y))
    return batches


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_shared_denominator_is_exact_and_naive_is_not(dtype, tol):
    seed_everything(0)
    model = MLP(4, 16, 7).to(dtype)
    batches = _micro_batches([1, 12, 5], dtype)
    full = accumulation.full_batch_grad(model, batches)
    shared = accumulation.accumulated_grad(model, batches, shared_denominator=True)
    naive = accumulation.accumulated_grad(model, batches, shared_denominator=False)
    assert accumulation.relative_error(shared, full) < tol
    assert accumulation.relative_error(naive, full) > 1e-2


def test_equal_counts_make_the_naive_recipe_exact():
    seed_everything(0)
    model = MLP(4, 16, 7).double()
    batches = _micro_batches([6, 6, 6], torch.float64)
    full = accumulation.full_batch_grad(model, batches)
    naive = accumulation.accumulated_grad(model, batches, shared_denominator=False)
    assert accumulation.relative_error(naive, full) < 1e-12


def test_count_items():
    assert accumulation.count_items(_micro_batches([1, 12, 5], torch.float32)) == 18
