"""Chapter 12's bug zoo: data- and context-parallel losses that a real 2-process run shows to be wrong.

Each exhibit is written as a single-process *simulation* of what DDP ends up with: the rows of the batch are
dealt to ``ranks`` ranks (``lossbook.distributed.split_for_ranks``), each rank's loss is built the wrong way,
and the ranks' gradients are averaged as DDP averages them.  The returned scalar has the value the ranks log
and the gradient DDP applies, so ``lossbook.checks.compare_losses`` against ``causal_lm_loss`` of the whole
batch (the single-process full batch) catches each one.  The chapter also runs each of them for real under
torchrun (``lossbook.demos.distributed_run``) and shows the gradients agree with these simulations.
"""

from __future__ import annotations

import torch

from ..causal_lm import causal_lm_loss
from ..distributed import count_targets, split_for_ranks

__all__ = ["per_rank_mean", "forgets_world_size_factor", "all_reduces_the_loss", "shifts_each_shard"]


def _ddp_mean(per_rank: list[torch.Tensor]) -> torch.Tensor:
    return sum(per_rank) / len(per_rank)  # DDP: the mean of the ranks' gradients


def per_rank_mean(logits, labels, ignore_index=-100, ranks=2, micro_batches=1):
    """BUG: each rank averages over its own targets (``causal_lm_loss`` with no count), DDP averages
    the ranks.

    A token on a rank with few targets weighs more than one on a busy rank: the mean of means of
    chapter 01, one level up.  Right only when every rank (and micro-batch) holds the same number of
    targets.
    """
    parts = zip(split_for_ranks(logits, ranks, micro_batches),
                split_for_ranks(labels, ranks, micro_batches))
    per_rank = [sum(causal_lm_loss(z, y, ignore_index=ignore_index) / micro_batches
                    for z, y in zip(zs, ys)) for zs, ys in parts]
    return _ddp_mean(per_rank)


def forgets_world_size_factor(logits, labels, ignore_index=-100, ranks=2, micro_batches=1):
    """BUG: the all-reduced count is used, but the loss is not multiplied by the world size.

    Every token gets the right *relative* weight, and DDP's mean divides the gradient by ``ranks``: the
    gradient (and the logged loss) is the full batch's divided by the number of ranks.  With SGD that is a
    learning rate ``ranks`` times too small; Adam hides most of it.
    """
    zs_r, ys_r = split_for_ranks(logits, ranks, micro_batches), split_for_ranks(labels, ranks, micro_batches)
    total = sum(count_targets(y, ignore_index=ignore_index) for ys in ys_r for y in ys)  # the all-reduced N
    per_rank = [sum(causal_lm_loss(z, y, num_items_in_batch=total, ignore_index=ignore_index)
                    for z, y in zip(zs, ys)) for zs, ys in zip(zs_r, ys_r)]
    return _ddp_mean(per_rank)


def all_reduces_the_loss(logits, labels, ignore_index=-100, ranks=2, micro_batches=1):
    """BUG: ``dist.all_reduce(loss); loss = loss / world_size`` on the per-rank means, then
    ``backward()``.

    Every rank now logs the same number (the mean of the ranks' means), which looks global.  But the
    in-place all-reduce is invisible to autograd (torch only warns); the ``/ world_size`` is not.
    So each rank's gradient is its own mean's, divided by the world size, and DDP divides by it
    again.  The returned scalar has the logged value and that gradient.
    """
    parts = zip(split_for_ranks(logits, ranks, micro_batches),
                split_for_ranks(labels, ranks, micro_batches))
    means = [sum(causal_lm_loss(z, y, ignore_index=ignore_index) / micro_batches
                 for z, y in zip(zs, ys)) for zs, ys in parts]  # each rank's own loss
    logged = sum(m.detach() for m in means) / ranks  # the all-reduced value every rank sees
    backpropagated = _ddp_mean([m / ranks for m in means])  # what autograd differentiates
    return backpropagated + (logged - backpropagated).detach()


def shifts_each_shard(logits, labels, ignore_index=-100, ranks=2):
    """BUG (context parallelism): each rank lets the loss shift its own piece of the sequence.

    The sequence dimension is cut into ``ranks`` pieces; rank r's labels are ``labels[:, piece]`` and
    ``causal_lm_loss`` shifts them inside the piece, so the last position of every piece loses its target
    (the first token of the next piece) and the all-reduced count is short by one per row per cut.  The
    ranks' losses are multiplied by ``ranks`` and averaged (DDP), as the correct recipe does.
    """
    pieces = zip(logits.chunk(ranks, dim=1), labels.chunk(ranks, dim=1))  # [batch, seq/ranks, ...] each
    pieces = list(pieces)
    total = sum(count_targets(y, ignore_index=ignore_index) for _, y in pieces)  # all-reduced local counts
    per_rank = [ranks * causal_lm_loss(z, y, num_items_in_batch=total, ignore_index=ignore_index) for z, y in pieces]
    return _ddp_mean(per_rank)
