"""Chapter 06's bug zoo: plausible, wrong question-answering losses, each failing the check lossbook passes.

Each takes ``question_answering_loss``'s arguments.  Run them through ``checks.compare_losses`` with
``demos.question_answering.question_answering_cases``; never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "no_clamping",
    "clamps_to_last_token",
    "sums_the_two_losses",
    "swaps_start_and_end",
    "pools_both_heads",
    "onehot_without_squeeze",
]


def _squeeze(positions):
    return positions.squeeze(-1) if positions.dim() > 1 else positions


def no_clamping(start_logits, end_logits, start_positions, end_positions, **kwargs):
    """BUG: positions go straight into cross_entropy; a cut-off answer (position >= seq) crashes it."""
    start_loss = F.cross_entropy(start_logits, _squeeze(start_positions))
    end_loss = F.cross_entropy(end_logits, _squeeze(end_positions))
    return (start_loss + end_loss) / 2


def clamps_to_last_token(start_logits, end_logits, start_positions, end_positions, **kwargs):
    """BUG: clamp(0, seq - 1) "to keep the index valid": a cut-off answer is trained as the last token."""
    seq = start_logits.size(1)
    start_positions = _squeeze(start_positions).clamp(0, seq - 1)  # [batch], never ignored
    end_positions = _squeeze(end_positions).clamp(0, seq - 1)
    return (F.cross_entropy(start_logits, start_positions) + F.cross_entropy(end_logits, end_positions)) / 2


def sums_the_two_losses(start_logits, end_logits, start_positions, end_positions, **kwargs):
    """BUG: start + end instead of their mean: the loss and every gradient are twice too large.

    Under SGD that is a doubled learning rate; Adam(W) normalises the gradient's scale away, so its step
    barely changes, but the loss no longer compares with upstream's and gradient clipping sees twice the norm.
    """
    seq = start_logits.size(1)
    start_positions = _squeeze(start_positions).clamp(0, seq)
    end_positions = _squeeze(end_positions).clamp(0, seq)
    return F.cross_entropy(start_logits, start_positions, ignore_index=seq) + F.cross_entropy(
        end_logits, end_positions, ignore_index=seq
    )


def swaps_start_and_end(start_logits, end_logits, start_positions, end_positions, **kwargs):
    """BUG: the start head is scored against the end positions and vice versa (heads unpacked in the wrong order)."""
    seq = start_logits.size(1)
    start_positions = _squeeze(start_positions).clamp(0, seq)
    end_positions = _squeeze(end_positions).clamp(0, seq)
    start_loss = F.cross_entropy(start_logits, end_positions, ignore_index=seq)
    end_loss = F.cross_entropy(end_logits, start_positions, ignore_index=seq)
    return (start_loss + end_loss) / 2


def pools_both_heads(start_logits, end_logits, start_positions, end_positions, **kwargs):
    """BUG: one cross-entropy over the 2*batch rows of both heads: wrong when the heads keep different counts.

    Right whenever every start and every end is kept (or the same number are ignored in each head);
    wrong once truncation cuts off an end but not its start, since the pooled mean weighs the two
    heads by their kept counts instead of 1/2 each.
    """
    seq = start_logits.size(1)
    logits = torch.cat([start_logits, end_logits])  # [2*batch, seq]
    positions = torch.cat([_squeeze(start_positions), _squeeze(end_positions)]).clamp(0, seq)  # [2*batch]
    return F.cross_entropy(logits, positions, ignore_index=seq)


def onehot_without_squeeze(start_logits, end_logits, start_positions, end_positions, **kwargs):
    """BUG: a hand-written one-hot loss that forgets squeeze(-1): [batch, 1] positions broadcast
    silently.

    Right for positions of shape [batch]; for [batch, 1] the one-hot is [batch, 1, seq], times the
    [batch, seq] log-probabilities it broadcasts to [batch, batch, seq], and every example is scored
    against every other example's answer.
    """
    seq = start_logits.size(1)

    def head(logits, positions):
        positions = positions.clamp(0, seq)  # [batch] or [batch, 1]
        keep = (positions != seq).to(logits.dtype)  # [batch] or [batch, 1]
        # [batch, seq], or [batch, 1, seq] for [batch, 1] positions
        onehot = F.one_hot(positions, seq + 1)[..., :seq].to(logits.dtype)
        nll = -(onehot * logits.log_softmax(-1)).sum(-1)  # [batch] or, broadcast, [batch, batch]
        return (nll * keep).sum() / keep.expand_as(nll).sum()

    return (head(start_logits, start_positions) + head(end_logits, end_positions)) / 2
