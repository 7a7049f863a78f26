"""Chapter 13's bug zoo: plausible mistakes in a policy-gradient loss, each failing ``compare_losses`` against
``lossbook.demos.policy_gradient.reference_loss`` (dapo, lossbook's ``policy_gradient_loss``) on the same cases.

Every function takes the reference's arguments: per-token log-probs, the sampling policy's, the advantages and
the completion mask [batch, seq] (advantages [batch]), the reference log-probs, ``beta`` and the global token
count ``num_items_in_batch``.
"""

from __future__ import annotations

import torch

__all__ = [
    "advantages_not_detached",
    "mean_over_padded_tokens",
    "live_old_policy",
    "k1_penalty",
    "clipped_advantage",
    "local_count",
]

EPS = 0.2


def _surrogate(coef_1, advantages):
    coef_2 = torch.clamp(coef_1, 1 - EPS, 1 + EPS)
    return -torch.min(coef_1 * advantages, coef_2 * advantages)


def advantages_not_detached(
    per_token_logps,
    old_per_token_logps,
    advantages,
    completion_mask,
    ref_per_token_logps=None,
    beta=0.0,
    num_items_in_batch=None,
):
    """Advantages computed from something that carries the policy's graph (here: a KL-shaped reward, the
    advantage minus 0.1 sum(logp - ref) per completion, RLOO's shaping) and used without ``.detach()``: the loss
    also differentiates the advantage itself.  Compared with ``shaped_reference_loss``, the same shaping detached."""
    kl = ((per_token_logps - ref_per_token_logps.detach()) * completion_mask).sum(
        -1
    )  # [batch], not detached
    shaped = (advantages.detach() - 0.1 * kl)[:, None]
    coef_1 = torch.exp(per_token_logps - old_per_token_logps.detach())
    return (_surrogate(coef_1, shaped) * completion_mask).sum() / num_items_in_batch


def mean_over_padded_tokens(
    per_token_logps,
    old_per_token_logps,
    advantages,
    completion_mask,
    ref_per_token_logps=None,
    beta=0.0,
    num_items_in_batch=None,
):
    """The token losses masked, then ``.mean()``: the padding counts in the denominator."""
    coef_1 = torch.exp(per_token_logps - old_per_token_logps.detach())
    return (_surrogate(coef_1, advantages.detach()[:, None]) * completion_mask).mean()


def live_old_policy(
    per_token_logps,
    old_per_token_logps,
    advantages,
    completion_mask,
    ref_per_token_logps=None,
    beta=0.0,
    num_items_in_batch=None,
):
    """The ratio against an old policy that is not detached (here: the on-policy ratio exp(logp - logp) with both
    sides live): the ratio is 1 and so is its gradient's numerator minus denominator: no gradient at all."""
    coef_1 = torch.exp(per_token_logps - per_token_logps)
    loss = _surrogate(coef_1, advantages.detach()[:, None])
    return (loss * completion_mask).sum() / num_items_in_batch


def k1_penalty(
    per_token_logps,
    old_per_token_logps,
    advantages,
    completion_mask,
    ref_per_token_logps=None,
    beta=0.0,
    num_items_in_batch=None,
):
    """The KL penalty as k1 = logp - ref: unbiased in expectation, but negative on many tokens, so the penalty
    rewards moving away from the reference there."""
    coef_1 = torch.exp(per_token_logps - old_per_token_logps.detach())
    kl = (per_token_logps - ref_per_token_logps.detach()) * coef_1
    loss = _surrogate(coef_1, advantages.detach()[:, None]) + beta * kl
    return (loss * completion_mask).sum() / num_items_in_batch


def clipped_advantage(
    per_token_logps,
    old_per_token_logps,
    advantages,
    completion_mask,
    ref_per_token_logps=None,
    beta=0.0,
    num_items_in_batch=None,
):
    """The clip applied to the advantage instead of the ratio: -min(rho A, rho clip(A, 1 - eps, 1 + eps))."""
    coef_1 = torch.exp(per_token_logps - old_per_token_logps.detach())
    a = advantages.detach()[:, None]
    loss = -torch.min(coef_1 * a, coef_1 * torch.clamp(a, 1 - EPS, 1 + EPS))
    return (loss * completion_mask).sum() / num_items_in_batch


def local_count(
    per_token_logps,
    old_per_token_logps,
    advantages,
    completion_mask,
    ref_per_token_logps=None,
    beta=0.0,
    num_items_in_batch=None,
):
    """dapo with the micro-batch's own token count where the accumulated batch's belongs (bnpo's
    denominator): micro-batches of unequal token counts are weighted unequally, and the accumulated
    gradient is not the full batch's."""
    coef_1 = torch.exp(per_token_logps - old_per_token_logps.detach())
    loss = _surrogate(coef_1, advantages.detach()[:, None])
    return (loss * completion_mask).sum() / completion_mask.sum()
