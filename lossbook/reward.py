"""Reward models: the Bradley–Terry pairwise loss, preference probabilities, pairwise accuracy, pooling.

Chapter: notebooks/07_reward_models.ipynb.  Upstream: TRL ``RewardTrainer.compute_loss`` (the loss, the
margin, ``center_rewards_coefficient``) and the prediction step of earlier TRL releases (seed 000:
``torch.stack(logits).mean(dim=2).softmax(dim=0).T``), which current TRL no longer has.

Bradley–Terry (1952): P(chosen beats rejected) = sigmoid(r_c - r_r); the loss is its negative log-likelihood,
as in Ouyang et al. 2022 (InstructGPT), Eq. 1; the margin is Touvron et al. 2023 (Llama 2), Eq. 2; the
centering term is Eisenstein et al. 2023, "Helping or Herding?", Sec. 3.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from ._checks import check_float, check_tensor, shape_str

__all__ = ["pairwise_reward_loss", "preference_probs", "pairwise_accuracy", "last_token_rewards"]


def pairwise_reward_loss(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_rewards_coefficient: float | None = None,
) -> torch.Tensor:
    """Bradley–Terry negative log-likelihood that ``chosen`` beats ``rejected``, mean over pairs.

    ``rewards_chosen``, ``rewards_rejected``: Float[Tensor, "batch"] or ``[batch, 1]``, one shape.
    ``margin``: Float[Tensor, "batch"] (TRL's collator column), the rewards' shape, or a number.
    coef = ``center_rewards_coefficient`` (``None`` or 0 leaves the centering term out).

        loss = mean_i [ -log sigmoid(r_c,i - r_r,i - m_i) ]  +  coef * mean_i (r_c,i + r_r,i)^2

    The margin is subtracted: a pair stops pulling once r_c - r_r exceeds m.  The centering term
    pins the mean reward near 0, which the Bradley–Terry term cannot see.  Ouyang et al. 2022
    (InstructGPT), Eq. 1; Touvron et al. 2023 (Llama 2), Eq. 2; Eisenstein et al. 2023, Sec. 3.

    Upstream: TRL ``RewardTrainer.compute_loss`` (the same value, gradients and dtype on the same
    rewards); what differs: chapter 07's table.
    """
    check_float("rewards_chosen", rewards_chosen)
    check_float("rewards_rejected", rewards_rejected)
    _check_pair_shapes(rewards_chosen, rewards_rejected, allow_k=False)
    delta = rewards_chosen - rewards_rejected  # [batch] or [batch, 1]
    if margin is not None:
        delta = delta - _margin_like(margin, rewards_chosen)  # same shape as delta
    loss = -F.logsigmoid(delta).mean()  # []
    if (center_rewards_coefficient is not None
            and _check_coefficient(center_rewards_coefficient) > 0):
        coef = float(center_rewards_coefficient)
        loss = loss + coef * torch.mean((rewards_chosen + rewards_rejected) ** 2)  # []
    return loss


def preference_probs(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor) -> torch.Tensor:
    """P(chosen preferred), P(rejected preferred) per pair: Float[Tensor, "batch 2"], rows sum to 1.

    Seed 000's prediction step: ``torch.stack(logits).mean(dim=2).softmax(dim=0).T``::

        rewards [batch, k] x 2  -> stack [2, batch, k] -> mean over k [2, batch]
        -> softmax over the pair (dim 0) [2, batch] -> transpose [batch, 2]

    so column 0 is sigmoid(mean r_c - mean r_r), the Bradley–Terry probability that chosen wins.
    ``[batch]`` rewards are read as ``[batch, 1]``.  Chosen and rejected must have the same shape
    (no broadcasting).
    """
    check_float("rewards_chosen", rewards_chosen)
    check_float("rewards_rejected", rewards_rejected)
    _check_pair_shapes(rewards_chosen, rewards_rejected, allow_k=True)
    if rewards_chosen.dim() == 1:
        rewards_chosen = rewards_chosen[:, None]  # [batch, 1]
        rewards_rejected = rewards_rejected[:, None]  # [batch, 1]
    if rewards_chosen.shape[1] == 0:
        raise ValueError(
            f"rewards must have at least one output per pair, got {shape_str(rewards_chosen)}"
        )
    stacked = torch.stack([rewards_chosen, rewards_rejected])  # [2, batch, k]
    return stacked.mean(dim=2).softmax(dim=0).T  # [2, batch] -> softmax over the pair -> [batch, 2]


def pairwise_accuracy(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor) -> torch.Tensor:
    """The fraction of pairs whose chosen reward is strictly higher: TRL's ``accuracy`` metric.

    ``(rewards_chosen > rewards_rejected).float().mean()`` as in ``RewardTrainer.compute_loss``; a tie counts
    as wrong.  Shapes as :func:`pairwise_reward_loss`.  Returns a float32 0-dim tensor (NaN for an empty batch).
    A NaN reward is an error (TRL counts its pair as wrong, so a diverged model reads as accuracy 0); the
    check reads one flag (a host-device synchronisation on an accelerator).
    """
    check_float("rewards_chosen", rewards_chosen)
    check_float("rewards_rejected", rewards_rejected)
    _check_pair_shapes(rewards_chosen, rewards_rejected, allow_k=False)
    for name, r in (("rewards_chosen", rewards_chosen), ("rewards_rejected", rewards_rejected)):
        if bool(torch.isnan(r).any()):
            pairs = torch.isnan(r).flatten().nonzero().flatten().tolist()
            raise ValueError(f"{name} holds NaN at pairs {pairs} (shape {shape_str(r)}): a NaN reward has no "
                             "order, so its pair is neither right nor wrong")
    return (rewards_chosen > rewards_rejected).float().mean()  # []


def last_token_rewards(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The reward of each sequence: its per-position score at the last real (non-pad) token.

    ``values``: Float[Tensor, "batch seq"] (or ``[batch, seq, 1]``), a score head applied at every
    position; ``attention_mask``: [batch, seq], 1 (or True) on real tokens.  Returns
    Float[Tensor, "batch"].

    The index is the last position whose mask is 1, ``(arange(seq) * mask).argmax(-1)``, so right
    and left padding both work; in a causal model only that token has read the whole sequence.  A
    row with no real token is an error.  Reading ``values[:, -1]`` instead scores a pad token on
    right-padded batches (chapter 07's bug zoo).

    Upstream: transformers' ``GenericForSequenceClassification`` pooling, which finds the token from
    ``input_ids != pad_token_id``; the two agree unless the pad id also marks real tokens (pad =
    eos, TRL's fallback for a tokenizer without one), where the pad-id rule stops one token early.
    """
    check_float("values", values)
    check_tensor("attention_mask", attention_mask)
    if values.dim() == 3 and values.shape[-1] == 1:
        values = values.squeeze(-1)  # [batch, seq]
    if values.dim() != 2:
        raise ValueError(
            "values must be [batch, seq] (or [batch, seq, 1]) per-position scores, got "
            f"{shape_str(values)}"
        )
    if attention_mask.shape != values.shape:
        raise ValueError(
            f"attention_mask must have the shape of values {shape_str(values)} (one flag per "
            f"position), got {shape_str(attention_mask)}"
        )
    mask = attention_mask.to(values.device) != 0  # [batch, seq] bool
    if not bool(mask.any(dim=-1).all()):  # one device sync
        empty = (~mask.any(dim=-1)).nonzero().flatten().tolist()
        raise ValueError(
            f"attention_mask {shape_str(attention_mask)} has rows with no real token: {empty}"
        )
    positions = torch.arange(values.shape[1], device=values.device)  # [seq]
    last = (positions * mask).argmax(dim=-1)  # [batch]: the last position whose mask is 1
    return values.gather(1, last[:, None]).squeeze(1)  # [batch]


def _check_pair_shapes(chosen: torch.Tensor, rejected: torch.Tensor, *, allow_k: bool) -> None:
    if chosen.shape != rejected.shape:
        raise ValueError(
            f"rewards_chosen {shape_str(chosen)} and rewards_rejected {shape_str(rejected)} must have the same "
            "shape, one reward per pair each; different shapes would broadcast (e.g. [batch] - [batch, 1] is a "
            "[batch, batch] matrix of every chosen against every rejected)"
        )
    if allow_k:
        if chosen.dim() not in (1, 2):
            raise ValueError(f"rewards must be [batch] or [batch, k], got {shape_str(chosen)}")
        return
    if chosen.dim() not in (1, 2) or (chosen.dim() == 2 and chosen.shape[1] != 1):
        raise ValueError(
            f"rewards must be [batch] or [batch, 1] (one scalar reward per sequence), got {shape_str(chosen)}; a "
            "reward model has num_labels=1 (TRL requires it)"
        )


def _margin_like(margin, rewards: torch.Tensor) -> torch.Tensor:
    """The margin as a tensor of the rewards' shape, refusing anything that would broadcast."""
    if isinstance(margin, numbers.Real) and not isinstance(margin, bool):
        if not math.isfinite(margin):
            raise ValueError(f"margin must be finite, got {margin}")
        return torch.full_like(rewards, float(margin))
    check_tensor("margin", margin)
    integer = (torch.int64, torch.int32, torch.int16, torch.int8)
    if not (margin.is_floating_point() or margin.dtype in integer):
        raise TypeError(
            f"margin must hold real numbers, got dtype {margin.dtype} with shape "
            f"{shape_str(margin)}"
        )
    on_cpu = margin.device.type == "cpu"  # a margin on an accelerator is not read (no sync)
    if on_cpu and margin.is_floating_point() and not bool(torch.isfinite(margin).all()):
        raise ValueError(f"margin {shape_str(margin)} holds NaN or infinite values")
    batch = rewards.shape[0]
    if margin.dim() == 0:  # one margin for every pair, like a number
        return margin.to(rewards.device).expand(rewards.shape)
    if margin.shape == rewards.shape or margin.shape == (batch,):
        return margin.to(rewards.device).reshape(rewards.shape)  # explicit, never broadcast
    raise ValueError(
        f"margin must have shape [{batch}] (one per pair) or the rewards' shape "
        f"{shape_str(rewards)}, got {shape_str(margin)}; anything else would broadcast against "
        "the rewards"
    )


def _check_coefficient(coef) -> float:
    if isinstance(coef, bool) or not isinstance(coef, numbers.Real):
        raise TypeError(f"center_rewards_coefficient must be a number or None, got {type(coef).__name__}")
    if not (coef >= 0 and coef != float("inf")):
        raise ValueError(f"center_rewards_coefficient must be a finite number >= 0, got {coef}")
    return float(coef)
