"""The bug zoo of chapter 14 (KTO, ORPO, SimPO): plausible, wrong versions, each failing the check.

Every exhibit takes the keywords of one of the correct pipelines in ``lossbook.demos.reference_free``
(``simpo_from_logits``, ``simpo_from_logps``, ``kto_from_logps``, ``orpo_from_logps``) and returns the
per-example losses; ``lossbook.checks.compare_losses`` runs both on ``zoo_cases``.  Never use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dpo import sequence_logps

__all__ = ["simpo_on_summed_logps", "simpo_margin_added", "simpo_margin_not_divided_by_beta", "kto_kl_not_detached",
           "kto_kl_not_clamped", "kto_labels_swapped", "orpo_naive_log1mexp"]


def simpo_on_summed_logps(chosen_logits, chosen_ids, chosen_mask, rejected_logits, rejected_ids, rejected_mask,
                          beta, simpo_gamma):
    """BUG: SimPO on *summed* log-probs: the reward grows with the completion's length."""
    u_w = sequence_logps(chosen_logits, chosen_ids, chosen_mask)  # average=True forgotten
    u_l = sequence_logps(rejected_logits, rejected_ids, rejected_mask)
    return -F.logsigmoid(beta * (u_w - u_l) - simpo_gamma)


def simpo_margin_added(policy_chosen_logps, policy_rejected_logps, beta, simpo_gamma):
    """BUG: the target margin added instead of subtracted: the loss asks for less than a tie."""
    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps) + simpo_gamma)


def simpo_margin_not_divided_by_beta(policy_chosen_logps, policy_rejected_logps, beta, simpo_gamma):
    """BUG: TRL's ``logits - gamma / beta`` written ``logits - gamma``: the margin is beta gamma."""
    logits = policy_chosen_logps - policy_rejected_logps - simpo_gamma  # TRL: - simpo_gamma / beta
    return -F.logsigmoid(beta * logits)


def _kto(chosen_logratios, rejected_logratios, kl, beta):
    chosen = 1 - torch.sigmoid(beta * (chosen_logratios - kl))
    rejected = 1 - torch.sigmoid(beta * (kl - rejected_logratios))
    return torch.cat([chosen, rejected])


def kto_kl_not_detached(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                        ref_rejected_logps, policy_kl_logps, ref_kl_logps, beta):
    """BUG: the reference point z0 left in the graph: the gradient also moves the KL estimate."""
    kl = (policy_kl_logps - ref_kl_logps).mean().clamp(min=0)  # no .detach()
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    return _kto(chosen_logratios, rejected_logratios, kl, beta)


def kto_kl_not_clamped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                       policy_kl_logps, ref_kl_logps, beta):
    """BUG: a negative KL estimate (a noisy batch) used as the reference point: a KL is never below 0."""
    kl = (policy_kl_logps - ref_kl_logps).mean().detach()  # no .clamp(min=0)
    return _kto(policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps, kl, beta)


def kto_labels_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                       policy_kl_logps, ref_kl_logps, beta):
    """BUG: desirable and undesirable swapped (a thumbs-up read as True = bad): trains away from the labels."""
    kl = (policy_kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
    chosen = 1 - torch.sigmoid(beta * (kl - (policy_chosen_logps - ref_chosen_logps)))
    rejected = 1 - torch.sigmoid(beta * ((policy_rejected_logps - ref_rejected_logps) - kl))
    return torch.cat([chosen, rejected])


def orpo_naive_log1mexp(policy_chosen_logps, policy_rejected_logps, beta):
    """BUG: log(1 - exp(u)) computed as written: near u = 0 exp(u) rounds to 1 and the log is -inf."""
    log_odds = (policy_chosen_logps - policy_rejected_logps) - (
        torch.log(1 - torch.exp(policy_chosen_logps)) - torch.log(1 - torch.exp(policy_rejected_logps)))
    return -beta * F.logsigmoid(log_odds)
