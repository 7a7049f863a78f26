"""Why losses are computed from logits: log-sum-exp, naive and stable.

Chapter: notebooks/00_how_to_read_this_book.ipynb.
"""

from __future__ import annotations

import torch

from ._checks import check_float

__all__ = ["logsumexp_naive", "logsumexp_stable", "log_softmax_naive", "log_softmax_stable"]


def logsumexp_naive(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(sum(exp(z))) as written: exp overflows to inf in float32 once z > ~88.7."""
    check_float("z", z)
    return torch.log(torch.exp(z).sum(dim))  # [...] (dim reduced)


def logsumexp_stable(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """m + log(sum(exp(z - m))) with m = max(z): every exponent is <= 0, so nothing overflows."""
    check_float("z", z)
    m = z.amax(dim, keepdim=True)  # [..., 1]
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf rows: shift by 0
    return (m + torch.log(torch.exp(z - m).sum(dim, keepdim=True))).squeeze(dim)  # [...]


def log_softmax_naive(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(softmax(z)) in two steps: softmax underflows to 0 and log(0) = -inf."""
    check_float("z", z)
    p = torch.exp(z) / torch.exp(z).sum(dim, keepdim=True)
    return torch.log(p)


def log_softmax_stable(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """z - logsumexp(z): the form every loss in this book uses."""
    return z - logsumexp_stable(z, dim).unsqueeze(dim)
