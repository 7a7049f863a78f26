"""Chapter 07's bug zoo: plausible, wrong reward-model losses, each failing the check lossbook passes.

The loss exhibits have the signature of ``pairwise_reward_loss`` so ``checks.compare_losses`` against lossbook
on ``demos.reward.reward_cases`` fails for each; ``reward_at_last_position`` has the signature of
``last_token_rewards``.  Never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reward import pairwise_reward_loss

__all__ = [
    "swapped_pair",
    "margin_added",
    "softmax_over_batch",
    "log_of_sigmoid",
    "seed_margin_broadcast",
    "reward_at_last_position",
]


def _margin(margin, like):
    if margin is None:
        return torch.zeros_like(like)
    if torch.is_tensor(margin):
        return margin.reshape(like.shape)
    return torch.full_like(like, float(margin))


def _center(loss, rewards_chosen, rewards_rejected, coef):
    if coef:
        loss = loss + coef * torch.mean((rewards_chosen + rewards_rejected) ** 2)
    return loss


def swapped_pair(rewards_chosen, rewards_rejected, margin=None, center_rewards_coefficient=None):
    """BUG: chosen and rejected swapped (a dataset's columns read the wrong way round): the model learns to
    prefer what the annotators rejected, and its training loss falls about as fast (chapter 07, section 5)."""
    delta = rewards_rejected - rewards_chosen - _margin(margin, rewards_chosen)
    return _center(-F.logsigmoid(delta).mean(), rewards_chosen, rewards_rejected, center_rewards_coefficient)


def margin_added(rewards_chosen, rewards_rejected, margin=None, center_rewards_coefficient=None):
    """BUG: the margin added instead of subtracted: -log sigmoid(r_c - r_r + m).  A pair the annotators called
    clearly better (large m) counts as already satisfied even when the model ranks it the wrong way, so the
    pairs that carry the most information pull the least (chapter 07, section 5)."""
    delta = rewards_chosen - rewards_rejected + _margin(margin, rewards_chosen)
    return _center(-F.logsigmoid(delta).mean(), rewards_chosen, rewards_rejected, center_rewards_coefficient)


def softmax_over_batch(
    rewards_chosen, rewards_rejected, margin=None, center_rewards_coefficient=None
):
    """BUG: the 2-way softmax taken over the wrong dimension: ``stack(dim=1)`` gives ``[batch, 2]``,
    and ``log_softmax(dim=0)`` normalises each column over the batch instead of each pair over its
    two items.  Chosen rewards then compete with the other pairs' chosen rewards; for batch 1 it is
    identically 0."""
    chosen = rewards_chosen.reshape(-1) - _margin(margin, rewards_chosen).reshape(-1)  # [batch]
    logits = torch.stack([chosen, rewards_rejected.reshape(-1)], dim=1)  # [batch, 2]
    loss = -logits.log_softmax(dim=0)[:, 0].mean()  # BUG: dim=0 is the batch; the pair is dim=1
    return _center(loss, rewards_chosen, rewards_rejected, center_rewards_coefficient)


def log_of_sigmoid(rewards_chosen, rewards_rejected, margin=None, center_rewards_coefficient=None):
    """BUG: ``torch.log(torch.sigmoid(x))`` instead of ``F.logsigmoid(x)``: equal on paper, but in float32
    ``torch.sigmoid`` returns 0 below x = -88.7 (chapter 07 prints the sweep), so a pair ranked wrong by a
    large margin gives an infinite loss, where the true loss is about -x."""
    delta = rewards_chosen - rewards_rejected - _margin(margin, rewards_chosen)
    loss = -torch.log(torch.sigmoid(delta)).mean()
    return _center(loss, rewards_chosen, rewards_rejected, center_rewards_coefficient)


def seed_margin_broadcast(rewards_chosen, rewards_rejected, margin=None, center_rewards_coefficient=None):
    """BUG (seed 000, earlier TRL): ``rewards_chosen - rewards_rejected - inputs["margin"]`` with the model's
    ``[batch, 1]`` rewards and the collator's ``[batch]`` margin broadcasts to ``[batch, batch]``: every pair is
    scored against every pair's margin, and the mean mixes them.  Exact for batch 1, for a margin equal for
    every pair, and for ``[batch]`` rewards (current TRL squeezes them); wrong when margins differ in a batch."""
    if margin is None:
        return pairwise_reward_loss(rewards_chosen, rewards_rejected, None, center_rewards_coefficient)
    margin = margin if torch.is_tensor(margin) else torch.tensor(float(margin))
    margin = margin.reshape(-1) if margin.dim() > 1 else margin  # the collator's column: [batch]
    loss = -F.logsigmoid(rewards_chosen - rewards_rejected - margin).mean()  # [batch, 1] - [batch] -> [batch, batch]
    return _center(loss, rewards_chosen, rewards_rejected, center_rewards_coefficient)


def reward_at_last_position(values, attention_mask):
    """BUG: ``values[:, -1]``, the score at the last *position*, which on a right-padded batch is a pad
    token for every sequence shorter than the longest (correct only for left padding, or no padding)."""
    values = values.squeeze(-1) if values.dim() == 3 else values  # [batch, seq]
    return values[:, -1]  # [batch]
