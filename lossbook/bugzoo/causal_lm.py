"""The causal-LM bug zoo (chapter 02): plausible, wrong next-token losses, each failing the check.

Each takes ``(logits, labels, ignore_index)`` like ``causal_lm_loss`` and is compared with it by
``lossbook.checks.compare_losses`` on ``lossbook.demos.causal_lm.causal_lm_cases``.  Never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..causal_lm import causal_lm_loss, next_token_labels

__all__ = ["shifts_twice", "forgets_to_shift", "scores_the_padding", "shifts_each_shard"]


def shifts_twice(logits, labels, ignore_index=-100):
    """BUG: the data pipeline already shifted the labels; the loss shifts them again (t + 2)."""
    already_shifted = next_token_labels(labels, ignore_index)  # [batch, seq], by the collator
    return causal_lm_loss(logits, already_shifted, ignore_index=ignore_index)  # shifted again


def forgets_to_shift(logits, labels, ignore_index=-100):
    """BUG: position t is scored against token t, which it can see; copying the input wins."""
    flat_logits = logits.float().reshape(-1, logits.shape[-1])  # [batch*seq, vocab]
    return F.cross_entropy(flat_logits, labels.reshape(-1), ignore_index=ignore_index)  # no shift


def scores_the_padding(logits, labels, ignore_index=-100, pad_id=0):
    """BUG: ``labels = input_ids.clone()`` without setting padding to -100: the pad token is trained on."""
    labels = torch.where(labels == ignore_index, torch.full_like(labels, pad_id), labels)  # pad label -> pad id
    return causal_lm_loss(logits, labels, ignore_index=ignore_index)


def shifts_each_shard(logits, labels, ignore_index=-100, shards=2):
    """BUG: a sequence split across ``shards`` (context parallelism), each shard shifting its own labels.

    The last position of every shard loses its target (the first token of the next shard), even with a
    shared ``num_items_in_batch``; shift the full sequence once and pass ``shift_labels`` instead.
    """
    total = (next_token_labels(labels, ignore_index) != ignore_index).sum()  # [] the full sequence's count
    pieces = zip(logits.chunk(shards, dim=1), labels.chunk(shards, dim=1))  # [batch, seq/shards, ...] each
    return sum(causal_lm_loss(z, y, num_items_in_batch=total, ignore_index=ignore_index) for z, y in pieces)
