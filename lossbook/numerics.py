"""Why losses are computed from logits: log-sum-exp, naive and stable.

Chapter: notebooks/00_how_to_read_this_book.ipynb.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_float

__all__ = [
    "exp_limits",
    "logsumexp_naive",
    "logsumexp_stable",
    "log_softmax_naive",
    "log_softmax_stable",
    "log_of_softmax",
]


def exp_limits(dtype: torch.dtype) -> tuple[float, float]:
    """``(overflow, underflow)``: ``exp(x)`` is ``inf`` in ``dtype`` above ``overflow`` = log(max), and
    rounds to 0 below ``underflow`` = log(smallest subnormal / 2): a result under half the smallest
    subnormal rounds to 0 (round to nearest), so log(smallest subnormal) itself is not the limit.

    float32: (88.72, -103.97); bfloat16: (88.72, -92.88); float16: (11.09, -17.33).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    info = torch.finfo(dtype)
    return math.log(info.max), math.log(info.smallest_normal * info.eps / 2)


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
    """log(exp(z) / sum(exp(z))) as written: ``exp`` overflows (float32 above ~88.7, float16 above ~11.1),
    and ``x / inf = 0`` gives log(0) = -inf (``inf / inf`` gives nan).  An overflow, not an underflow:
    for the underflow see :func:`log_of_softmax`."""
    check_float("z", z)
    p = torch.exp(z) / torch.exp(z).sum(dim, keepdim=True)
    return torch.log(p)


def log_softmax_stable(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """z - logsumexp(z): the form every loss in this book uses."""
    return z - logsumexp_stable(z, dim).unsqueeze(dim)


def log_of_softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(softmax(z)) with torch's (max-shifted, never overflowing) softmax: it still *underflows*.

    A probability below the smallest subnormal (a logit gap above ~103.3 in float32, ~16.6 in float16)
    rounds to 0 and log(0) = -inf, while the true log-probability is a finite ``z_y - logsumexp(z)``.
    """
    check_float("z", z)
    return torch.log(torch.softmax(z, dim))
