"""Policy-gradient losses: group advantages, the clipped surrogate, and every loss type of TRL's GRPOTrainer.

Chapter: notebooks/13_policy_gradients.ipynb.  Upstream: TRL 1.16 ``trl.trainer.grpo_trainer.GRPOTrainer``
(``_generate_and_score_completions`` for the advantages, ``_compute_loss`` for the loss, one process and one
accumulation step) and ``RLOOTrainer`` (its leave-one-out baseline).

A policy samples ``num_generations`` completions per prompt; a reward function scores them; each completion's
advantage is its reward against its group's (``group_advantages``, GRPO, Shao et al. 2024) or against the mean
of its siblings (``rloo_advantages``, Ahmadian et al. 2024).  ``policy_gradient_loss`` turns per-token
log-probs (``token_logps``: chapter 09's ``sequence_logps`` alignment, kept per token) into the scalar loss:
the importance ratio against the sampling policy, one token loss per loss type, the k3 KL to a reference
added with ``beta``, and the denominator, which is what the loss types mostly differ in.  The inputs and
settings are checked in one call (``_check_pg_inputs``), then ``LOSS_FUNCTIONS[loss_type]`` computes it.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import check_count, check_float, check_integer, check_rank, shape_str

__all__ = [
    "group_advantages",
    "rloo_advantages",
    "token_logps",
    "completion_logps",
    "k3_kl",
    "clipped_surrogate",
    "policy_gradient_loss",
    "LOSS_FUNCTIONS",
    "TRL_LOSS_TYPES",
    "KEYWORDS",
]

#: The loss types of TRL 1.16's GRPOTrainer, in the order of its ``_compute_loss``'s denominators.
TRL_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
_SCALE_REWARDS = ("group", "batch", "none")
_STD_EPS = 1e-4  # TRL's `advantages / (std_rewards + 1e-4)`
# VESPO's gamma weights: TRL 1.16's GRPOConfig defaults (vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg)
_VESPO = {"k_pos": 2.0, "lambda_pos": 3.0, "k_neg": 3.0, "lambda_neg": 2.0}

#: The keywords each loss type reads, beyond the tensors, beta and its KL settings; a keyword set to anything but
#: its default for a loss type that does not read it is an error.
KEYWORDS = {
    "grpo": ("epsilon", "epsilon_high", "delta"),
    "bnpo": ("epsilon", "epsilon_high", "delta"),
    "dr_grpo": ("epsilon", "epsilon_high", "delta", "max_completion_length"),
    "dapo": ("epsilon", "epsilon_high", "delta", "num_items_in_batch"),
    "cispo": ("epsilon_high", "num_items_in_batch"),
    "sapo": ("sapo_temperature_pos", "sapo_temperature_neg"),
    "luspo": ("epsilon", "epsilon_high", "delta"),
    "vespo": ("num_items_in_batch",),
}
_DEFAULTS = {
    "epsilon": 0.2,
    "epsilon_high": None,
    "delta": None,
    "num_items_in_batch": None,
    "max_completion_length": None,
    "sapo_temperature_pos": 1.0,
    "sapo_temperature_neg": 1.05,
}


# ---------------------------------------------------------------- advantages


def group_advantages(
    rewards: torch.Tensor, num_generations: int, scale_rewards="group"
) -> torch.Tensor:
    """GRPO's advantages, Float[batch]: each reward minus its group's mean, over a std.

    Groups are ``num_generations`` consecutive completions (of one prompt).  ``scale_rewards``:
    "group" (or True) divides by the group's std, "batch" by the batch's, "none" (or False) not
    at all; the std is Bessel-corrected and gets TRL's + 1e-4.  Shao et al. 2024 (DeepSeekMath),
    Eq. 3's outcome supervision; TRL 1.16: ``GRPOTrainer._generate_and_score_completions``.
    """
    scale_rewards = _check_rewards(rewards, num_generations, scale_rewards)
    grouped = rewards.view(-1, num_generations)  # [prompts, num_generations]
    mean_grouped_rewards = grouped.mean(dim=1).repeat_interleave(num_generations, dim=0)  # [batch]
    if scale_rewards == "group":
        std_rewards = grouped.std(dim=1).repeat_interleave(num_generations, dim=0)  # [batch]
    else:
        std_rewards = rewards.std().expand_as(rewards)  # [batch], read only by "batch"
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + _STD_EPS)
    return advantages


def rloo_advantages(
    rewards: torch.Tensor, num_generations: int, normalize_advantages: bool = False
) -> torch.Tensor:
    """RLOO's advantages, Float[batch]: each reward minus the mean of its group's *other* rewards.

    r_i - (sum_j r_j - r_i) / (G - 1), G = ``num_generations``: a baseline that does not
    depend on the completion it scores.  ``normalize_advantages`` then standardises over the
    batch (TRL's + 1e-4).  Ahmadian et al. 2024, "Back to Basics", Eq. 5; TRL 1.16:
    ``RLOOTrainer._generate_and_score_completions`` (rewards already include any KL penalty).
    """
    _check_rewards(rewards, num_generations, "none")
    if not isinstance(normalize_advantages, bool):
        raise TypeError(
            f"normalize_advantages must be a bool, got {type(normalize_advantages).__name__}"
        )
    grouped = rewards.view(-1, num_generations)  # [prompts, num_generations]
    grouped_sum = grouped.sum(dim=1, keepdim=True)  # [prompts, 1]
    baselines = ((grouped_sum - grouped) / (num_generations - 1)).view(-1)  # [batch]
    advantages = rewards - baselines
    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + _STD_EPS)
    return advantages


def _check_rewards(rewards, num_generations, scale_rewards) -> str:
    """Rewards [batch] (finite floats), groups that tile the batch, a known scaling; returns the scaling's name."""
    check_float("rewards", rewards)
    check_rank("rewards", rewards, (1,), "[batch] (one reward per completion)")
    if not isinstance(num_generations, numbers.Integral) or isinstance(num_generations, bool):
        raise TypeError(f"num_generations must be an int, got {type(num_generations).__name__}")
    if num_generations < 2:
        raise ValueError(
            f"num_generations must be >= 2 (a group of one has no baseline), got {num_generations}"
        )
    if rewards.shape[0] % num_generations:
        raise ValueError(
            f"num_generations={num_generations} does not divide the batch: rewards has shape "
            f"{shape_str(rewards)}; groups are num_generations consecutive completions"
        )
    if not torch.isfinite(rewards).all():
        raise ValueError(
            f"rewards must be finite, got {rewards.tolist()} (TRL zeroes the advantage of a NaN "
            "reward; lossbook refuses it)"
        )
    if scale_rewards is True:
        return "group"
    if scale_rewards is False:
        return "none"
    if scale_rewards not in _SCALE_REWARDS:
        raise ValueError(
            f"scale_rewards must be one of {list(_SCALE_REWARDS)} (or True/False), got "
            f"{scale_rewards!r}"
        )
    return scale_rewards


# ---------------------------------------------------------------- per-token log-probs


def token_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token log-probs per position, Float[batch, seq - 1], 0 where not scored.

    ``sequence_logps``'s alignment (chapter 09), kept per token: position t of ``logits``
    [batch, seq, vocab] scores ``labels[:, t + 1]``, scored where ``mask[:, 1:]`` (the mask has the
    labels' shape); ``token_logps(...).sum(-1)`` is ``sequence_logps(...)``.
    """
    check_float("logits", logits)
    check_rank("logits", logits, (3,), "[batch, seq, vocab]")
    check_integer("labels", labels, "token ids")
    if labels.shape != logits.shape[:-1] or mask.shape != labels.shape:
        raise ValueError(
            f"labels and mask must have shape {list(logits.shape[:-1])} (logits "
            f"{shape_str(logits)} without the vocab dim), got {shape_str(labels)} and "
            f"{shape_str(mask)}"
        )
    scored = mask[:, 1:].bool()  # [batch, seq - 1]: aligned with the shifted targets
    targets = labels[:, 1:].masked_fill(~scored, 0)  # an unscored label is never read
    z = logits[:, :-1]  # [batch, seq - 1, vocab]: the last row predicts nothing
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z  # half precision in float32
    log_probs = z.log_softmax(-1)  # [batch, seq - 1, vocab]
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [batch, seq - 1]
    return picked.masked_fill(~scored, 0.0)


def completion_logps(
    model, prompt_ids, prompt_mask, completion_ids, completion_mask
) -> torch.Tensor:
    """Float[batch, completion]: the model's log-probs of each completion token, as TRL gets them.

    One forward on ``[prompt; completion]`` with the joint attention mask (TRL's ``_compute_loss``),
    then ``token_logps`` with the prompt unscored; the last ``completion`` positions are kept.
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [batch, prompt + completion]
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = (
        out.logits if hasattr(out, "logits") else out
    )  # a transformers model, or a TinyTransformer
    scored = torch.cat([torch.zeros_like(prompt_mask), completion_mask], dim=1)
    return token_logps(logits, input_ids, scored)[
        :, -completion_ids.shape[1] :
    ]  # [batch, completion]


# ---------------------------------------------------------------- the pieces


def k3_kl(per_token_logps: torch.Tensor, ref_per_token_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(pi || pi_ref) per token: exp(ref - logp) - (ref - logp) - 1.

    Unbiased for the KL when the token was sampled from pi (derived in chapter 13), and never
    negative, unlike k1 = logp - ref.  TRL 1.16: ``GRPOTrainer._compute_loss``, ``per_token_kl``.
    """
    log_ratio = ref_per_token_logps - per_token_logps  # [batch, seq]: log pi_ref / pi, TRL's x
    return torch.exp(log_ratio) - log_ratio - 1


def clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high, delta=None):
    """PPO's clipped token loss: -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A).

    Schulman et al. 2017, Eq. 7, with DAPO's clip-higher (eps_high, Yu et al. 2025) and the
    two-sided cap ``delta`` on the unclipped ratio (TRL's ``args.delta``).  TRL 1.16:
    ``GRPOTrainer._compute_loss``, the branch of grpo, bnpo, dr_grpo, dapo and luspo.
    """
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss1 = coef_1 * advantages
    per_token_loss2 = coef_2 * advantages
    return -torch.min(per_token_loss1, per_token_loss2)


# ---------------------------------------------------------------- the loss


def policy_gradient_loss(
    per_token_logps,
    old_per_token_logps,
    advantages,
    completion_mask,
    *,
    loss_type="dapo",
    epsilon=0.2,
    epsilon_high=None,
    delta=None,
    beta=0.0,
    ref_per_token_logps=None,
    num_items_in_batch=None,
    max_completion_length=None,
    importance_sampling_level="token",
    use_bias_correction_kl=True,
    sapo_temperature_pos=1.0,
    sapo_temperature_neg=1.05,
):
    """The scalar loss of TRL 1.16 ``GRPOTrainer._compute_loss`` (one process, one step).

    ``per_token_logps``, ``old_per_token_logps`` (the sampling policy's, detached; None: the
    policy's own, detached, TRL's on-policy case), ``completion_mask``: [batch, seq];
    ``advantages``: [batch] or [batch, seq], detached.  The ratio rho = exp(logp - old) (per
    token, or ``importance_sampling_level="sequence"``: the masked mean of the log-ratio, GSPO),
    the loss type's token loss, ``beta`` times the k3 KL to ``ref_per_token_logps`` (times rho
    when ``use_bias_correction_kl``), then the loss type's denominator (``LOSS_FUNCTIONS``).
    Differences from TRL: chapter 13's table.
    """
    params, kl_on = _check_pg_inputs(
        per_token_logps,
        old_per_token_logps,
        advantages,
        completion_mask,
        loss_type,
        importance_sampling_level,
        beta,
        ref_per_token_logps,
        use_bias_correction_kl,
        {
            "epsilon": epsilon,
            "epsilon_high": epsilon_high,
            "delta": delta,
            "num_items_in_batch": num_items_in_batch,
            "max_completion_length": max_completion_length,
            "sapo_temperature_pos": sapo_temperature_pos,
            "sapo_temperature_neg": sapo_temperature_neg,
        },
    )
    mask = completion_mask.to(per_token_logps.dtype)  # [batch, seq]
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # [batch, 1]
    if old_per_token_logps is None:
        old_per_token_logps = (
            per_token_logps.detach()
        )  # on-policy: the ratio is 1, its gradient is not 0
    log_ratio = per_token_logps - old_per_token_logps  # [batch, seq]
    if importance_sampling_level == "token":
        log_importance_weights = log_ratio
    else:  # "sequence": one ratio per completion, the mean log-ratio over its tokens
        log_importance_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        log_importance_weights = log_importance_weights.unsqueeze(-1)  # [batch, 1]
    coef_1 = torch.exp(log_importance_weights)
    kl_penalty = 0.0
    if kl_on:
        per_token_kl = k3_kl(per_token_logps, ref_per_token_logps)  # [batch, seq]
        if use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1
        kl_penalty = beta * per_token_kl
    return LOSS_FUNCTIONS[loss_type](
        per_token_logps, log_ratio, coef_1, advantages, mask, kl_penalty, **params
    )


def _number(name, value, *, positive=False, allow_none=False):
    if value is None and allow_none:
        return None
    if torch.is_tensor(value) and value.dim() == 0:
        value = float(value)
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def _is_default(name, value) -> bool:
    default = _DEFAULTS[name]
    return value is None if default is None else (not torch.is_tensor(value) and value == default)


def _check_no_nan(name, t):
    if torch.isnan(t).any():
        raise ValueError(f"{name} holds NaN (shape {shape_str(t)}): the loss would be NaN")


def _check_pg_inputs(
    per_token_logps,
    old_per_token_logps,
    advantages,
    completion_mask,
    loss_type,
    importance_sampling_level,
    beta,
    ref_per_token_logps,
    use_bias_correction_kl,
    settings,
):
    """Every check of ``policy_gradient_loss``, in one place; returns the loss type's keywords and whether the KL
    term is on (chapter 13's table lists what it refuses that TRL accepts)."""
    check_float("per_token_logps", per_token_logps)
    check_rank(
        "per_token_logps", per_token_logps, (2,), "[batch, seq] (one log-prob per completion token)"
    )
    _check_no_nan("per_token_logps", per_token_logps)
    shape = per_token_logps.shape
    if not torch.is_tensor(completion_mask) or completion_mask.shape != shape:
        got = (
            shape_str(completion_mask)
            if torch.is_tensor(completion_mask)
            else type(completion_mask).__name__
        )
        raise ValueError(
            f"completion_mask must have per_token_logps' shape {shape_str(per_token_logps)}, got {got}"
        )
    if (
        completion_mask.dtype != torch.bool
        and not ((completion_mask == 0) | (completion_mask == 1)).all()
    ):
        raise ValueError(
            f"completion_mask must hold only 0 and 1 (or bools), got other values in shape "
            f"{shape_str(completion_mask)}"
        )
    for name, t in (
        ("old_per_token_logps", old_per_token_logps),
        ("ref_per_token_logps", ref_per_token_logps),
    ):
        if t is None:
            continue
        check_float(name, t)
        _check_no_nan(name, t)
        if t.shape != shape:
            raise ValueError(
                f"{name} must have per_token_logps' shape {shape_str(per_token_logps)}, got "
                f"{shape_str(t)}"
            )
        if t.grad_fn is not None:
            raise ValueError(
                f"{name} was computed with autograd on (grad_fn={type(t.grad_fn).__name__}): the ratio "
                f"and the KL would send gradients into it. Compute it under torch.no_grad() or pass "
                f"{name}.detach()"
            )
    check_float("advantages", advantages)
    if advantages.shape not in (shape[:1], shape):
        raise ValueError(
            f"advantages must have shape [{shape[0]}] or {shape_str(per_token_logps)} (one per "
            f"completion, or per token), got {shape_str(advantages)}"
        )
    if not torch.isfinite(advantages).all():
        raise ValueError(
            f"advantages must be finite, got NaN or inf in shape {shape_str(advantages)} (TRL zeroes "
            "the advantage of an unscorable completion; lossbook refuses it)"
        )
    if advantages.requires_grad:
        raise ValueError(
            "advantages require grad: they are constants of the policy gradient (rewards minus a "
            "baseline); pass advantages.detach()"
        )
    if not isinstance(loss_type, str) or loss_type not in TRL_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {list(TRL_LOSS_TYPES)}, got {loss_type!r}")
    if importance_sampling_level not in ("token", "sequence"):
        raise ValueError(
            f"importance_sampling_level must be 'token' or 'sequence', got {importance_sampling_level!r}"
        )
    unused = sorted(
        k for k, v in settings.items() if k not in KEYWORDS[loss_type] and not _is_default(k, v)
    )
    if unused:
        users = {k: [t for t, ks in KEYWORDS.items() if k in ks] for k in unused}
        raise TypeError(
            f"loss_type={loss_type!r} does not use {unused}; "
            + "; ".join(f"{k} is read by {v}" for k, v in users.items())
        )
    beta = _number("beta", beta)
    if beta < 0:
        raise ValueError(f"beta must be >= 0 (the KL penalty's weight), got {beta}")
    if not isinstance(use_bias_correction_kl, bool):
        raise TypeError(
            f"use_bias_correction_kl must be a bool, got {type(use_bias_correction_kl).__name__}"
        )
    if beta != 0.0 and ref_per_token_logps is None:
        raise ValueError(
            f"beta={beta} needs ref_per_token_logps (the reference model's per-token log-probs)"
        )
    if beta == 0.0 and ref_per_token_logps is not None:
        raise TypeError(
            "ref_per_token_logps is given but beta=0.0: the KL term is off, so it would be ignored"
        )
    if beta == 0.0 and not use_bias_correction_kl:
        raise TypeError(
            "use_bias_correction_kl=False with beta=0.0: there is no KL term to correct"
        )

    params = {}
    if "epsilon" in KEYWORDS[loss_type]:
        params["epsilon_low"] = _number("epsilon", settings["epsilon"], positive=True)
    if "epsilon_high" in KEYWORDS[loss_type]:
        high = _number("epsilon_high", settings["epsilon_high"], positive=True, allow_none=True)
        if loss_type == "cispo" and high is None:
            raise ValueError(
                "loss_type='cispo' caps the ratio itself at epsilon_high (not 1 + epsilon_high); TRL "
                "would default it to epsilon (a cap of 0.2); pass epsilon_high, e.g. 5.0"
            )
        params["epsilon_high"] = params["epsilon_low"] if high is None else high
    if "delta" in KEYWORDS[loss_type]:
        params["delta"] = _number("delta", settings["delta"], positive=True, allow_none=True)
    if "num_items_in_batch" in KEYWORDS[loss_type]:
        n = settings["num_items_in_batch"]
        n = completion_mask.sum() if n is None else check_count("num_items_in_batch", n)
        params["num_items_in_batch"] = torch.as_tensor(n).to(
            per_token_logps.dtype
        )  # a count: floats divide
    if loss_type == "dr_grpo":
        m = settings["max_completion_length"]
        params["max_completion_length"] = (
            shape[1] if m is None else check_count("max_completion_length", m)
        )
        longest = int(completion_mask.sum(-1).max()) if shape[0] else 0
        if longest > params["max_completion_length"]:
            raise ValueError(
                f"max_completion_length={params['max_completion_length']} is shorter than a completion "
                f"of {longest} tokens (completion_mask of shape {shape_str(completion_mask)}): it is "
                "the length limit of the generation, dr_grpo's constant denominator"
            )
    if loss_type == "sapo":
        params["temperature_pos"] = _number(
            "sapo_temperature_pos", settings["sapo_temperature_pos"], positive=True
        )
        params["temperature_neg"] = _number(
            "sapo_temperature_neg", settings["sapo_temperature_neg"], positive=True
        )
    return params, beta != 0.0


# ---------------------------------------------------------------- one function per loss type
# Each takes the policy's per-token log-probs, the log-ratio to the sampling policy, the importance ratio coef_1
# ([batch, seq], or [batch, 1] at sequence level), the advantages ([batch, 1] or [batch, seq]), the mask as floats,
# the KL penalty (beta * k3, or 0.0) and its own keywords, and returns the scalar loss: the token loss, then the
# loss type's denominator, in TRL's order.


def grpo_loss(
    per_token_logps,
    log_ratio,
    coef_1,
    advantages,
    mask,
    kl_penalty,
    *,
    epsilon_low,
    epsilon_high,
    delta,
):
    """GRPO: each completion's token losses averaged over its own length, then over completions.

    Shao et al. 2024, "DeepSeekMath", Eq. 3: the 1/|o_i| is the length bias Dr. GRPO names.
    TRL 1.16: ``GRPOTrainer._compute_loss``, ``loss_type in ["grpo", "sapo"]``.
    """
    per_token_loss = (
        clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high, delta) + kl_penalty
    )
    return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def bnpo_loss(
    per_token_logps,
    log_ratio,
    coef_1,
    advantages,
    mask,
    kl_penalty,
    *,
    epsilon_low,
    epsilon_high,
    delta,
):
    """BNPO: the token losses summed over the (local) batch, over its token count.

    Xiao et al. 2025, "BNPO: Beta Normalization Policy Optimization".  TRL 1.16:
    ``GRPOTrainer._compute_loss``, ``loss_type == "bnpo"`` (the count of this micro-batch only).
    """
    per_token_loss = (
        clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high, delta) + kl_penalty
    )
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)


def dr_grpo_loss(
    per_token_logps,
    log_ratio,
    coef_1,
    advantages,
    mask,
    kl_penalty,
    *,
    epsilon_low,
    epsilon_high,
    delta,
    max_completion_length,
):
    """Dr. GRPO: the token losses summed, over a constant (batch x max_completion_length).

    Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective", Sec. 3.2.
    TRL 1.16: ``GRPOTrainer._compute_loss``, ``loss_type == "dr_grpo"``.
    """
    per_token_loss = (
        clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high, delta) + kl_penalty
    )
    return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)


def dapo_loss(
    per_token_logps,
    log_ratio,
    coef_1,
    advantages,
    mask,
    kl_penalty,
    *,
    epsilon_low,
    epsilon_high,
    delta,
    num_items_in_batch,
):
    """DAPO: the token losses summed, over the token count of the whole accumulated batch.

    Yu et al. 2025, "DAPO", Eq. 8 (token-level loss).  TRL 1.16: ``GRPOTrainer._compute_loss``,
    ``loss_type in ["cispo", "dapo", "vespo"]``: ``num_items_in_batch`` spans every micro-batch.
    """
    per_token_loss = (
        clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high, delta) + kl_penalty
    )
    return (per_token_loss * mask).sum() / num_items_in_batch.clamp(min=1.0)


def cispo_loss(
    per_token_logps,
    log_ratio,
    coef_1,
    advantages,
    mask,
    kl_penalty,
    *,
    epsilon_high,
    num_items_in_batch,
):
    """CISPO: REINFORCE weighted by the detached, capped ratio: -sg(min(rho, eps_high)) A log pi.

    MiniMax 2025, "MiniMax-M1", Eq. 4: the ratio is clipped but no token's gradient is dropped.
    TRL 1.16: ``GRPOTrainer._compute_loss``, ``loss_type == "cispo"``; dapo's denominator.
    """
    clamped_ratios = torch.clamp(coef_1, max=epsilon_high).detach()
    per_token_loss = -clamped_ratios * advantages * per_token_logps + kl_penalty
    return (per_token_loss * mask).sum() / num_items_in_batch.clamp(min=1.0)


def sapo_loss(
    per_token_logps,
    log_ratio,
    coef_1,
    advantages,
    mask,
    kl_penalty,
    *,
    temperature_pos,
    temperature_neg,
):
    """SAPO: a soft gate in place of the clip, -(4 / tau) sigmoid(tau (rho - 1)) A.

    Gao et al. 2025, "Soft Adaptive Policy Optimization": tau = ``temperature_pos`` where A > 0,
    else ``temperature_neg``.  TRL 1.16: ``GRPOTrainer._compute_loss``, ``loss_type == "sapo"``;
    grpo's denominator.
    """
    temperatures = torch.where(advantages > 0, temperature_pos, temperature_neg)
    soft_coef_1 = torch.sigmoid(temperatures * (coef_1 - 1)) * 4 / temperatures
    per_token_loss = -soft_coef_1 * advantages + kl_penalty
    return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def luspo_loss(
    per_token_logps,
    log_ratio,
    coef_1,
    advantages,
    mask,
    kl_penalty,
    *,
    epsilon_low,
    epsilon_high,
    delta,
):
    """LUSPO: the clipped token losses summed per completion (no length division), a mean over completions.

    "Length-Unbiased Sequence Policy Optimization" (the GSPO ratio, importance_sampling_level=
    "sequence", without GSPO's 1/|o_i|).  TRL 1.16: ``GRPOTrainer._compute_loss``,
    ``loss_type == "luspo"``.
    """
    per_token_loss = (
        clipped_surrogate(coef_1, advantages, epsilon_low, epsilon_high, delta) + kl_penalty
    )
    return (per_token_loss * mask).sum(-1).mean()


def vespo_loss(
    per_token_logps, log_ratio, coef_1, advantages, mask, kl_penalty, *, num_items_in_batch
):
    """VESPO: REINFORCE weighted by a detached gamma function of the sequence ratio w: e^lam w^k e^(-lam w).

    TRL 1.16: ``GRPOTrainer.get_gamma_weights`` with GRPOConfig's default k and lambda (2, 3 where
    A >= 0; 3, 2 else), then ``loss_type == "vespo"``; dapo's denominator.
    """
    with torch.no_grad():  # phi only scales the gradient
        lower = math.log(1e-8)
        seq_log_ratio = torch.sum(
            torch.clamp(log_ratio, -20.0, 20.0) * mask, dim=-1, keepdim=True
        )  # [batch, 1]
        log_w_seq = torch.clamp(seq_log_ratio, lower, 20.0)
        nonneg = advantages >= 0
        k_seq = torch.where(nonneg, _VESPO["k_pos"], _VESPO["k_neg"])
        lambda_seq = torch.where(nonneg, _VESPO["lambda_pos"], _VESPO["lambda_neg"]).clamp(min=1e-4)
        log_phi = lambda_seq + k_seq * log_w_seq - lambda_seq * torch.exp(log_w_seq)
        phi_seq = torch.exp(log_phi).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    per_token_loss = -phi_seq * advantages * per_token_logps + kl_penalty
    return (per_token_loss * mask).sum() / num_items_in_batch.clamp(min=1.0)


#: loss_type -> the function that computes its loss (``policy_gradient_loss`` checks the inputs, then calls it).
LOSS_FUNCTIONS = {
    "grpo": grpo_loss,
    "bnpo": bnpo_loss,
    "dr_grpo": dr_grpo_loss,
    "dapo": dapo_loss,
    "cispo": cispo_loss,
    "sapo": sapo_loss,
    "luspo": luspo_loss,
    "vespo": vespo_loss,
}
