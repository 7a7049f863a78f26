"""The bug zoo: plausible, wrong cross-entropies, each failing ``checks.compare_losses``.

These are kept as exhibits (chapter 01, section "Bug zoo") and as evidence that
the book's checks can fail (tests/test_bugzoo.py).  Never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["scores_the_padding", "cross_entropy_of_probabilities", "mean_of_means", "log_of_softmax"]


def scores_the_padding(source, target, ignore_index=-100):
    """BUG: ignore_index is dropped; padded positions are scored as token 0 (the pad id)."""
    target = torch.where(target == ignore_index, torch.zeros_like(target), target)  # pad label -> 0
    return F.cross_entropy(source, target)


def cross_entropy_of_probabilities(source, target, ignore_index=-100):
    """BUG: softmax applied before cross_entropy, which applies log_softmax again."""
    return F.cross_entropy(source.softmax(-1), target, ignore_index=ignore_index)


def mean_of_means(source, target, ignore_index=-100, micro_batches=2):
    """BUG: the mean of per-micro-batch means is not the mean over all kept items."""
    chunks = zip(source.chunk(micro_batches), target.chunk(micro_batches))
    means = [F.cross_entropy(s, t, ignore_index=ignore_index) for s, t in chunks]
    means = [m for m in means if not torch.isnan(m)]  # skip all-ignored micro-batches
    return torch.stack(means).mean() if means else source.sum() * float("nan")


def log_of_softmax(source, target, ignore_index=-100):
    """BUG: -log(softmax(z)[y]) in two steps; softmax underflows to 0 at extreme logits."""
    keep = target != ignore_index
    p = torch.exp(source) / torch.exp(source).sum(-1, keepdim=True)  # [items, classes]
    picked = p[keep].gather(-1, target[keep].unsqueeze(-1)).squeeze(-1)  # [kept]
    return -torch.log(picked).mean()
