"""Preference losses without a reference model: CPO (sigmoid, hinge, IPO), SimPO, AlphaPO, and ORPO.

Chapter: notebooks/14_reference_free_preferences.ipynb.  Upstream: TRL 1.16 ``trl.experimental.cpo``
``CPOTrainer.cpo_loss`` (its ``loss_type`` branches and the AlphaPO reward for ``alpha != 0``) and
``trl.experimental.orpo`` ``ORPOTrainer.odds_ratio_loss`` (with its ``log1mexp``).

Each loss sees only the policy's log-probs of the chosen and the rejected completion.  TRL's
``CPOTrainer`` feeds summed log-probs to ``sigmoid`` and ``hinge`` and average (per-token) log-probs
to ``ipo`` and ``simpo`` (``concatenated_forward``: ``average_log_prob=self.loss_type in ["ipo",
"simpo"]``; ``AVERAGED`` here); ``ORPOTrainer`` always feeds averages.  A log-prob is a number:
``cpo_loss`` cannot tell a sum from an average, so ``cpo_logps`` computes the right one for a loss
type."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_float, check_rank, shape_str
from .dpo import pair_logps

__all__ = ["cpo_loss", "orpo_loss", "log1mexp", "cpo_logps", "alphapo_reward", "LOSS_FUNCTIONS",
           "LOSS_TYPES", "AVERAGED"]

#: The loss types of TRL 1.16's ``CPOTrainer.cpo_loss``, in its order (AlphaPO: ``alpha != 0``).
LOSS_TYPES = ("simpo", "sigmoid", "hinge", "ipo")
#: The loss types whose log-probs TRL averages over the completion's tokens.
AVERAGED = ("ipo", "simpo")
_SIMPO_GAMMA = 0.5  # TRL 1.16's CPOConfig.simpo_gamma default, read only by simpo
_LN2 = 0.6931471805599453


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, computed without cancellation: two branches split at x = -log 2.

    Near 0, exp(x) rounds to 1 and log1p(-exp(x)) loses every digit: there log(-expm1(x)) is exact.
    Far below 0, expm1(x) rounds to -1 and its log loses the small exp(x): there log1p(-exp(x)) is
    exact (Maechler 2012, "Accurately Computing log(1 - exp(-|a|))").  TRL 1.16:
    ``trl.experimental.orpo``'s ``log1mexp``, which this equals.  x = 0 gives -inf (an odds of
    infinity), as TRL."""
    far = x < -_LN2  # [...] True where exp(x) < 1/2: log1p keeps the small exp(x)
    return torch.where(far, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


# ---------------------------------------------------------------- CPO, SimPO, AlphaPO


def cpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             simpo_gamma: float = _SIMPO_GAMMA,
             alpha: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CPO's per-pair losses (sigmoid, hinge, ipo, simpo; AlphaPO: alpha != 0), detached rewards.

    Inputs: Float[Tensor, "batch"] each, the policy's log-probs: summed for sigmoid and hinge,
    averaged per token for ipo and simpo (TRL's convention; ``cpo_logps``).  The reward of a
    completion is its log-prob u, or with AlphaPO (1 - exp(u)^(-alpha)) / alpha; the margin is m =
    u_w - u_l; simpo subtracts gamma / beta from it, so that beta m - gamma is SimPO's margin (Meng
    et al. 2024, Eq. 6).  Returns ``(losses, chosen_rewards, rejected_rewards)``, each [batch], the
    rewards beta u, detached. ``losses.mean()`` is ``CPOTrainer.cpo_loss``'s (TRL adds ``cpo_alpha``
    times the chosen NLL)."""
    beta, alpha = _check_cpo_inputs(policy_chosen_logps, policy_rejected_logps, beta, loss_type,
                                    label_smoothing, simpo_gamma, alpha)
    if alpha != 0.0:
        policy_chosen_rewards = alphapo_reward(policy_chosen_logps, alpha)  # [batch]
        policy_rejected_rewards = alphapo_reward(policy_rejected_logps, alpha)  # [batch]
        logits = policy_chosen_rewards - policy_rejected_rewards  # [batch]
    else:
        policy_chosen_rewards, policy_rejected_rewards = policy_chosen_logps, policy_rejected_logps
        logits = policy_chosen_logps - policy_rejected_logps  # [batch]
    params = {"label_smoothing": label_smoothing} if loss_type in ("simpo", "sigmoid") else {}
    if loss_type == "simpo":
        params["simpo_gamma"] = simpo_gamma
    losses = LOSS_FUNCTIONS[loss_type](logits, beta, **params)  # [batch]
    chosen_rewards = beta * policy_chosen_rewards.detach()
    rejected_rewards = beta * policy_rejected_rewards.detach()
    return losses, chosen_rewards, rejected_rewards


def alphapo_reward(logps: torch.Tensor, alpha: float) -> torch.Tensor:
    """AlphaPO's reward (1 - p^(-alpha)) / alpha, p = exp(logps): log p at alpha -> 0.

    Gupta et al. 2025, "AlphaPO: Reward Shape Matters for LLM Alignment", Eq. 5.  TRL 1.16:
    ``CPOTrainer.cpo_loss``, branch ``if self.alpha != 0.0`` (``torch.exp`` then ``pow(-alpha)``).
    """
    probs = torch.exp(logps)
    return (1 - probs.pow(-alpha)) / alpha


def simpo_loss(logits, beta, label_smoothing, simpo_gamma):
    """SimPO: -log sigmoid(beta m - gamma), m the margin of average log-probs (smoothed as cDPO).

    Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward", Eq. 6.
    TRL 1.16: ``CPOTrainer.cpo_loss``, branch ``loss_type == "simpo"``, which shifts the margin by
    gamma / beta before multiplying by beta.  [batch] in and out.
    """
    gamma_logratios = simpo_gamma / beta
    logits = logits - gamma_logratios
    return (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
            - F.logsigmoid(-beta * logits) * label_smoothing)


def sigmoid_loss(logits, beta, label_smoothing):
    """CPO: -log sigmoid(beta m), m the margin of summed log-probs (smoothed as cDPO).

    Xu et al. 2024, "Contrastive Preference Optimization", Eq. 3 (its preference term; TRL adds the
    NLL). TRL 1.16: ``CPOTrainer.cpo_loss``, branch ``loss_type == "sigmoid"``.  [batch] in and out.
    """
    return (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
            - F.logsigmoid(-beta * logits) * label_smoothing)


def hinge_loss(logits, beta):
    """SLiC's hinge without a reference: relu(1 - beta m).

    Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback".  TRL 1.16:
    ``CPOTrainer.cpo_loss``, branch ``loss_type == "hinge"``.  [batch] in and out.
    """
    return torch.relu(1 - beta * logits)


def ipo_loss(logits, beta):
    """IPO without a reference: (m - 1 / (2 beta))^2, m the margin of average log-probs.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", Eq. 17 (beta its tau).  TRL 1.16: ``CPOTrainer.cpo_loss``, branch ``loss_type ==
    "ipo"``."""
    return (logits - 1 / (2 * beta)) ** 2


#: loss_type -> the function computing its per-pair losses from the margin, in LOSS_TYPES' order.
LOSS_FUNCTIONS = {"simpo": simpo_loss, "sigmoid": sigmoid_loss, "hinge": hinge_loss, "ipo": ipo_loss}


def cpo_logps(model, batch: dict, loss_type: str):
    """``(chosen, rejected)`` log-probs of ``model`` on a batch of pairs
    (``lossbook.dpo.pair_logps``'s batch), averaged per token for ``AVERAGED`` loss types and summed
    otherwise, as TRL's ``CPOTrainer``."""
    return pair_logps(model, batch, average=loss_type in AVERAGED)


# ---------------------------------------------------------------- ORPO


def orpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO's per-pair odds-ratio penalty -beta log sigmoid(log odds_w - log odds_l), and detached
    rewards.

    Inputs: Float[Tensor, "batch"], average per-token log-probs u (TRL's ``average_log_prob=True``);
    the odds of a completion are p / (1 - p) with p = exp(u), so log odds = u - log(1 - exp(u))
    (``log1mexp``).  Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference
    Model", Eqs. 4 and 7.  ``nll + losses.mean()`` is TRL's loss: ``ORPOTrainer.odds_ratio_loss``
    returns beta log sigmoid (a log-likelihood) and the trainer subtracts its mean; here the sign is
    the loss's. Rewards: beta u, detached, as TRL.  Computed in float32 at least (TRL's
    ``.float()``)."""
    beta = _check_orpo_inputs(policy_chosen_logps, policy_rejected_logps, beta)
    dtype = torch.promote_types(policy_chosen_logps.dtype, torch.float32)  # TRL's .float()
    policy_chosen_logps = policy_chosen_logps.to(dtype)  # [batch]; float64 stays float64
    policy_rejected_logps = policy_rejected_logps.to(dtype)
    log_odds = (policy_chosen_logps - policy_rejected_logps) - (
        log1mexp(policy_chosen_logps) - log1mexp(policy_rejected_logps)
    )  # [batch]
    ratio = F.logsigmoid(log_odds)  # [batch]
    losses = -beta * ratio  # TRL: beta * ratio, subtracted
    chosen_rewards = beta * policy_chosen_logps.detach()
    rejected_rewards = beta * policy_rejected_logps.detach()
    return losses, chosen_rewards, rejected_rewards


# ---------------------------------------------------------------- checks


def _check_logps(a, b) -> None:
    for name, t in (("policy_chosen_logps", a), ("policy_rejected_logps", b)):
        check_float(name, t)
        check_rank(name, t, (1,), "[batch] (one log-prob per completion)")
    if a.shape != b.shape:
        raise ValueError(f"policy_chosen_logps has shape {shape_str(a)} but policy_rejected_logps has shape "
                         f"{shape_str(b)}: one chosen and one rejected log-prob per pair, in the same order")
    for name, t in (("policy_chosen_logps", a), ("policy_rejected_logps", b)):
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name} (shape {shape_str(t)}) holds NaN at {int(torch.isnan(t).sum())} of "
                             f"{t.numel()} pairs: a log-prob is a number or -inf")


def _check_real(name: str, value) -> float:
    if torch.is_tensor(value) or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _check_beta(beta) -> float:
    beta = _check_real("beta", beta)
    if beta <= 0:
        raise ValueError(f"beta must be a finite number > 0, got {beta}")
    return beta


def _check_cpo_inputs(policy_chosen_logps, policy_rejected_logps, beta, loss_type, label_smoothing,
                      simpo_gamma, alpha) -> tuple[float, float]:
    """Every check of ``cpo_loss`` (chapter 14's table lists what it refuses that TRL accepts)."""
    _check_logps(policy_chosen_logps, policy_rejected_logps)
    if not isinstance(loss_type, str) or loss_type not in LOSS_TYPES:
        hint = (" (TRL's CPOConfig turns 'alphapo' into 'simpo' with cpo_alpha = 0, no NLL, and leaves alpha as given;"
                " AlphaPO's reward is alpha != 0: pass loss_type='simpo' and alpha)") if loss_type == "alphapo" else ""
        raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}{hint}")
    beta = _check_beta(beta)
    label_smoothing = _check_real("label_smoothing", label_smoothing)
    if loss_type in ("hinge", "ipo") and label_smoothing != 0:
        raise ValueError(f"label_smoothing={label_smoothing} with loss_type={loss_type!r}: {loss_type} does not "
                         "read it (TRL 1.16 warns and ignores it); pass 0")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5) (a flip rate below one half), got {label_smoothing}")
    simpo_gamma = _check_real("simpo_gamma", simpo_gamma)
    if loss_type != "simpo" and simpo_gamma != _SIMPO_GAMMA:
        raise ValueError(f"simpo_gamma={simpo_gamma} with loss_type={loss_type!r}: only simpo has a margin "
                         f"(TRL 1.16 ignores it); leave it at its default {_SIMPO_GAMMA} or use loss_type='simpo'")
    alpha = _check_real("alpha", alpha)
    if alpha != 0 and bool((policy_chosen_logps > 0).any() | (policy_rejected_logps > 0).any()):
        raise ValueError("AlphaPO's reward needs log-probs <= 0 (probabilities), got a positive one")
    return beta, alpha


def _check_orpo_inputs(policy_chosen_logps, policy_rejected_logps, beta) -> float:
    """``orpo_loss``'s checks: two [batch] float vectors of log-probs < 0 (an average log-prob of 0
    has infinite odds), beta > 0."""
    _check_logps(policy_chosen_logps, policy_rejected_logps)
    for name, t in (("policy_chosen_logps", policy_chosen_logps), ("policy_rejected_logps", policy_rejected_logps)):
        if bool((t >= 0).any()):
            raise ValueError(f"{name} holds a log-prob >= 0 ({t.max().item()}): ORPO's odds p / (1 - p) need "
                             "p < 1 (TRL gives inf or nan)")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} (shape {shape_str(t)}) holds -inf: an average log-prob of -inf (a token of "
                             "probability 0) has log-odds -inf, and the penalty is inf or nan")
    return _check_beta(beta)
