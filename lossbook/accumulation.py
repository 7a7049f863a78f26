"""Gradient accumulation: k micro-batches equal one full batch only with a shared denominator.

Chapter: notebooks/01_cross_entropy.ipynb, section "num_items_in_batch".
"""

from __future__ import annotations

import torch

from .cross_entropy import fixed_cross_entropy

__all__ = ["count_items", "full_batch_grad", "accumulated_grad", "relative_error", "cosine_similarity"]


def count_items(micro_batches, ignore_index: int = -100) -> int:
    """Kept targets over all micro-batches: the ``num_items_in_batch`` transformers' Trainer computes."""
    return sum(int((labels != ignore_index).sum()) for _, labels in micro_batches)


def _flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _loss(model, inputs, labels, **kwargs):
    logits = model(inputs)  # [..., classes]
    return fixed_cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), **kwargs)  # []


def full_batch_grad(model: torch.nn.Module, micro_batches) -> torch.Tensor:
    """The gradient of the mean loss over every kept item of the concatenated batch."""
    inputs = torch.cat([x for x, _ in micro_batches])
    labels = torch.cat([y for _, y in micro_batches])
    model.zero_grad(set_to_none=True)
    _loss(model, inputs, labels).backward()
    return _flat_grad(model)


def accumulated_grad(
    model: torch.nn.Module, micro_batches, *, shared_denominator: bool
) -> torch.Tensor:
    """Accumulate ``backward()`` over micro-batches as a training loop does.

    ``shared_denominator=False``: each micro-batch's mean, divided by k (the
    naive recipe).  ``True``: each micro-batch's sum divided by the total count
    of kept items, via ``num_items_in_batch``.
    """
    model.zero_grad(set_to_none=True)
    k = len(micro_batches)
    total = count_items(micro_batches)
    for inputs, labels in micro_batches:
        if shared_denominator:
            loss = _loss(model, inputs, labels, num_items_in_batch=total)
        else:
            loss = _loss(model, inputs, labels) / k
        loss.backward()  # gradients add up in .grad
    return _flat_grad(model)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm())


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """a . b / (||a|| ||b||): 1 when two gradients point the same way, whatever their lengths."""
    return float((a.double() @ b.double()) / (a.double().norm() * b.double().norm()))
