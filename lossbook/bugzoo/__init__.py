"""The bug zoo: plausible, wrong losses, each failing the check that lossbook passes.

They are kept as exhibits (each chapter's "Bug zoo") and as evidence that the book's checks can fail
(tests/test_bugzoo.py and each chapter's tests).  Never use them.  This module holds chapter 01's wrong
cross-entropies; each later chapter has a submodule (``lossbook.bugzoo.causal_lm``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "scores_the_padding",
    "cross_entropy_of_probabilities",
    "mean_of_means",
    "log_of_softmax",
    "causal_lm",
    "masked_lm",
    "sequence_classification",
    "token_classification",
    "question_answering",
    "reward",
    "reward_laplace",
    "distributed",
    "dpo",
    "spin",
    "memory",
]


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


# one module per later chapter; imported last, so they can build on the names above
from . import (  # noqa: E402
    causal_lm,
    distributed,
    dpo,
    masked_lm,
    memory,
    question_answering,
    reward,
    reward_laplace,
    sequence_classification,
    spin,
    token_classification,
)
