"""Kahneman-Tversky Optimization: preference learning from unpaired thumbs-up / thumbs-down
examples.

Chapter: notebooks/14_reference_free_preferences.ipynb.  Upstream: TRL 1.16
``trl.trainer.kto_trainer`` ``KTOTrainer._compute_loss`` (its two ``loss_type`` branches, ``kto``
and ``apo_zero_unpaired``).

KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", Eq. 7)
scores each completion alone: its implicit reward r = log pi(y|x) - log pi_ref(y|x) is compared with
a reference point z0, a detached estimate of KL(pi || pi_ref) (``kto_kl``), through a sigmoid value
function; desirable examples gain when r > z0, undesirable ones when r < z0, each with its own
weight.  The desirable and the undesirable examples come in any numbers: nothing pairs them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_float, check_rank, shape_str

__all__ = ["kto_loss", "kto_kl", "LOSS_FUNCTIONS", "LOSS_TYPES", "recommended_weight_range"]

#: The loss types of TRL 1.16's KTOTrainer, in the order of its ``_compute_loss``.
LOSS_TYPES = ("kto", "apo_zero_unpaired")


def kto_kl(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0: the batch mean of log pi(y'|x) - log pi_ref(y'|x), detached,
    clamped at 0.

    ``policy_kl_logps``, ``ref_kl_logps``: Float[Tensor, "batch"], summed log-probs of *mismatched*
    pairs (each prompt with another example's completion; TRL 1.16 shifts the completions by one
    within the batch).  Their mean log-ratio estimates KL(pi || pi_ref) >= 0 (Ethayarajh et al.
    2024, Sec. 4.1). Returns a 0-dim tensor.  TRL 1.16: ``KTOTrainer._compute_loss``, ``kl =
    (KL_logps - ref_KL_logps).mean().detach()``, then ``.clamp(min=0)`` (after a gather across
    processes)."""
    _check_kl_inputs(policy_kl_logps, ref_kl_logps)
    kl = (policy_kl_logps - ref_kl_logps).mean().detach()  # [] no gradient flows through z0
    return kl.clamp(min=0)


def kto_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, kl: torch.Tensor,
             beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             loss_type: str = "kto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KTO's per-example losses and the detached implicit rewards.

    ``policy_chosen_logps``, ``ref_chosen_logps``: Float[Tensor, "desirable"];
    ``policy_rejected_logps``, ``ref_rejected_logps``: Float[Tensor, "undesirable"] (any counts,
    either may be 0).  ``kl``: the 0-dim reference point (``kto_kl``; ignored by
    ``apo_zero_unpaired``, whose TRL passes zeros).  Returns ``(losses, chosen_rewards,
    rejected_rewards)``: ``losses`` [desirable + undesirable] is the weighted desirable losses, then
    the weighted undesirable ones; the rewards are beta (policy - ref), detached. ``losses.mean()``
    is TRL 1.16's ``KTOTrainer`` loss.  Checks first (``_check_kto_inputs``), then
    ``LOSS_FUNCTIONS[loss_type]``, then the weights, as TRL."""
    beta = _check_kto_inputs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                             ref_rejected_logps, kl, beta, desirable_weight, undesirable_weight,
                             loss_type)
    chosen_losses, rejected_losses = LOSS_FUNCTIONS[loss_type](
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, kl, beta)
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()  # [desirable]
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()  # [undesirable]
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    return losses, chosen_rewards, rejected_rewards


def kto_branch_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, kl, beta):
    """KTO: 1 - sigmoid(beta (r - z0)) for desirable, 1 - sigmoid(beta (z0 - r)) for undesirable
    examples.

    Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", Eq. 7 (r the
    log-ratio, z0 = ``kl``).  TRL 1.16: ``KTOTrainer._compute_loss``, branches ``loss_type ==
    "kto"``. Returns the unweighted ``(chosen_losses, rejected_losses)``."""
    chosen_logratios = chosen_logps - ref_chosen_logps  # [desirable]
    chosen_losses = 1 - F.sigmoid(beta * (chosen_logratios - kl))
    rejected_logratios = rejected_logps - ref_rejected_logps  # [undesirable]
    rejected_losses = 1 - F.sigmoid(beta * (kl - rejected_logratios))
    return chosen_losses, rejected_losses


def apo_zero_unpaired_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, kl,
                           beta):
    """APO-zero, unpaired: 1 - sigmoid(beta r) for desirable, sigmoid(beta r) for undesirable
    examples.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions", Eq. 7
    without the pairing: the anchor is 0, not a KL estimate (``kl`` is not read).  TRL 1.16:
    ``KTOTrainer._compute_loss``, branches ``loss_type == "apo_zero_unpaired"``."""
    chosen_logratios = chosen_logps - ref_chosen_logps  # [desirable]
    chosen_losses = 1 - F.sigmoid(beta * chosen_logratios)
    rejected_logratios = rejected_logps - ref_rejected_logps  # [undesirable]
    rejected_losses = F.sigmoid(beta * rejected_logratios)
    return chosen_losses, rejected_losses


#: loss_type -> the function computing its (chosen_losses, rejected_losses), in LOSS_TYPES' order.
LOSS_FUNCTIONS = {"kto": kto_branch_loss, "apo_zero_unpaired": apo_zero_unpaired_loss}


def recommended_weight_range(n_desirable: int, n_undesirable: int, undesirable_weight: float = 1.0):
    """TRL 1.16's recommended ``desirable_weight`` interval (its warning,
    ``KTOTrainer._prepare_dataset``): ``desirable_weight * n_desirable / (undesirable_weight *
    n_undesirable)`` in [1, 4/3] (TRL rounds the bounds to 2 decimals and writes 1.33).  Returns
    ``(low, high)``."""
    ratio = n_undesirable * undesirable_weight / n_desirable
    return round(ratio, 2), round(ratio * 1.33, 2)


# ---------------------------------------------------------------- checks


def _check_pair(name_a, a, name_b, b) -> None:
    for name, t in ((name_a, a), (name_b, b)):
        check_float(name, t)
        check_rank(name, t, (1,), "[batch] (one summed log-prob per example)")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {shape_str(a)} but {name_b} has shape {shape_str(b)}: "
                         "policy and reference log-probs of the same examples, one per example")
    for name, t in ((name_a, a), (name_b, b)):
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name} (shape {shape_str(t)}) holds NaN at {int(torch.isnan(t).sum())} of "
                             f"{t.numel()} examples: a log-prob is a number or -inf")


def _check_kl_inputs(policy_kl_logps, ref_kl_logps) -> None:
    """``kto_kl``'s checks: two [batch] float vectors of one shape, without NaN, at least one pair."""
    _check_pair("policy_kl_logps", policy_kl_logps, "ref_kl_logps", ref_kl_logps)
    if policy_kl_logps.numel() == 0:
        raise ValueError("kto_kl got no mismatched pair (policy_kl_logps has shape [0]): the mean of none is NaN")


def _check_weight(name: str, value) -> float:
    if torch.is_tensor(value) or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def _check_kto_inputs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, kl,
                      beta, desirable_weight, undesirable_weight, loss_type) -> float:
    """Every check of ``kto_loss``: two [desirable] and two [undesirable] vectors (counts may
    differ), a detached 0-dim ``kl`` >= 0, beta > 0, weights >= 0, a known loss type.  Returns beta
    as a float."""
    if not isinstance(loss_type, str) or loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}")
    _check_pair("policy_chosen_logps", policy_chosen_logps, "ref_chosen_logps", ref_chosen_logps)
    _check_pair("policy_rejected_logps", policy_rejected_logps, "ref_rejected_logps", ref_rejected_logps)
    if policy_chosen_logps.numel() + policy_rejected_logps.numel() == 0:
        raise ValueError("kto_loss got no examples: 0 desirable and 0 undesirable")
    check_float("kl", kl)
    if kl.dim() != 0 and kl.shape != (1,):
        raise ValueError(f"kl must be the batch's reference point, a 0-dim tensor (kto_kl), got {shape_str(kl)}")
    if not bool(torch.isfinite(kl).all()):
        raise ValueError(f"kl must be finite, got {float(kl.reshape(-1)[0])}: a reference point of inf or NaN "
                         "makes every loss 1 (or NaN)")
    if kl.requires_grad:
        raise ValueError("kl requires grad: KTO's reference point is detached (TRL: .detach()); use kto_kl or "
                         "pass kl.detach()")
    if bool((kl < 0).any()):
        raise ValueError(f"kl must be >= 0 (kto_kl clamps the estimate at 0, as TRL), got {float(kl.min()):.4g}")
    for name, t in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        if t.grad_fn is not None:
            raise ValueError(f"{name} was computed with autograd on (grad_fn={type(t.grad_fn).__name__}): the "
                             f"reference is frozen; compute it under torch.no_grad() or pass {name}.detach()")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    _check_weight("desirable_weight", desirable_weight)
    _check_weight("undesirable_weight", undesirable_weight)
    return float(beta)
