"""The DPO bug zoo (chapter 09): plausible, wrong sequence log-probs and DPO steps, each failing the check.

Log-prob exhibits take ``(logits, labels, mask)`` like ``sequence_logps`` and are compared with it by
``lossbook.checks.compare_losses`` on ``lossbook.demos.dpo.sequence_logps_cases``.  Step exhibits take
``(policy, reference, batch, beta)`` and return the batch's DPO loss; ``lossbook.demos.dpo.check_dpo_step``
compares the value and the gradients of both models with ``dpo_batch_loss``.  Never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dpo import dpo_loss, pair_logps

__all__ = [
    "unshifted_gather",
    "misaligned_mask",
    "scores_the_prompt",
    "reference_receives_gradients",
    "sum_policy_mean_reference",
    "beta_applied_twice",
]


# ---------------------------------------------------------------- sequence log-probs


def unshifted_gather(logits, labels, mask=None):
    """BUG (seed 001, x-transformers ``log_prob_from_model_and_seq``):
    ``log_softmax(logits).gather(-1, seq)`` scores token t with the logits of position t, which
    predict token t + 1."""
    keep = labels != -100  # [batch, seq]
    if mask is not None:
        keep = keep & mask.bool()
    log_probs = logits.float().log_softmax(-1)  # [batch, seq, vocab]
    index = labels.clamp(min=0).unsqueeze(-1)  # [batch, seq, 1]: the labels themselves, no shift
    picked = log_probs.gather(-1, index).squeeze(-1)  # [batch, seq]
    return picked.masked_fill(~keep, 0.0).sum(-1)


def misaligned_mask(logits, labels, mask=None):
    """BUG: the targets are shifted, the mask is not: ``mask[:, :-1]`` marks the token *before* each scored one,
    so the last prompt token is scored and the last completion token (often EOS) is not."""
    targets = labels[:, 1:]  # [batch, seq - 1]
    keep = targets != -100
    if mask is not None:
        keep = keep & mask[:, :-1].bool()  # should be mask[:, 1:]
    log_probs = logits[:, :-1].float().log_softmax(-1)  # [batch, seq - 1, vocab]
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~keep, 0.0).sum(-1)


def scores_the_prompt(logits, labels, mask=None):
    """BUG: the completion mask is dropped: the prompt's log-probability is added to both completions (it
    cancels in policy - reference only if both models score the prompt alike, which training breaks)."""
    targets = labels[:, 1:]
    keep = targets != -100  # mask ignored
    log_probs = logits[:, :-1].float().log_softmax(-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~keep, 0.0).sum(-1)


# ---------------------------------------------------------------- DPO steps


def reference_receives_gradients(policy, reference, batch, beta):
    """BUG: the reference's log-probs are computed with autograd on: the value is right, but
    ``backward`` fills the reference's ``.grad`` and an optimiser over both models (or a shared
    module) moves the anchor.  (``dpo_loss`` refuses such log-probs, so the loss is written out.)"""
    pw, pl = pair_logps(policy, batch)
    rw, rl = pair_logps(reference, batch)  # no torch.no_grad(), no detach
    return -F.logsigmoid(beta * ((pw - rw) - (pl - rl))).mean()


def sum_policy_mean_reference(policy, reference, batch, beta):
    """BUG: summed log-probs for the policy, averaged ones for the reference: the log-ratio is dominated by
    the length, and the implicit reward is no longer log(pi / pi_ref)."""
    pw, pl = pair_logps(policy, batch, average=False)
    with torch.no_grad():
        rw, rl = pair_logps(reference, batch, average=True)
    return dpo_loss(pw, pl, rw, rl, beta=beta)[0].mean()


def beta_applied_twice(policy, reference, batch, beta):
    """BUG: the log-ratios are scaled by beta before a loss that scales by beta again (beta^2 in effect)."""
    pw, pl = pair_logps(policy, batch)
    with torch.no_grad():
        rw, rl = pair_logps(reference, batch)
    margin = beta * ((pw - rw) - (pl - rl))  # already the reward margin
    return -F.logsigmoid(beta * margin).mean()
