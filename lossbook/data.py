"""Synthetic data sets, generated on the spot (nothing is downloaded)."""

from __future__ import annotations

import math

import torch

__all__ = ["make_spirals", "train_test_split"]


def make_spirals(n_per_class: int, classes: int = 3, *, noise: float = 0.15, generator: torch.Generator | None = None):
    """Interleaved 2-D spirals, one arm per class.

    Returns ``x``: Float[Tensor, "batch 2"] and ``y``: Long[Tensor, "batch"].
    """
    t = torch.rand(classes, n_per_class, generator=generator)  # [classes, n]
    radius = 0.2 + t  # [classes, n]
    offsets = torch.arange(classes).unsqueeze(1) * (2 * math.pi / classes)  # [classes, 1]
    angle = 3.0 * t + offsets  # [classes, n]
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)  # [classes, n, 2]
    x = x + noise * radius.unsqueeze(-1) * torch.randn(x.shape, generator=generator)
    y = torch.arange(classes).repeat_interleave(n_per_class)  # [classes*n]
    return x.reshape(-1, 2), y


def train_test_split(*tensors, test_fraction: float = 0.25, generator: torch.Generator | None = None):
    """Shuffle rows together and split them: ``(a_train, a_test, b_train, b_test, ...)``."""
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"train_test_split: tensors disagree on rows: {[t.shape[0] for t in tensors]}")
    order = torch.randperm(n, generator=generator)
    cut = n - int(round(test_fraction * n))
    out = []
    for t in tensors:
        out += [t[order[:cut]], t[order[cut:]]]
    return tuple(out)
