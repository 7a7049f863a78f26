"""Direct Preference Optimization and its family: sequence log-probs, and the loss of every TRL loss type.

Chapter: notebooks/09_dpo.ipynb.  Upstream: TRL 1.16 ``trl.trainer.dpo_trainer.DPOTrainer._compute_loss``
(its ``loss_type`` branches) and x-transformers' ``DPO`` (seed 001, whose log-prob gather is unshifted).

DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model", Eq. 7) trains a policy pi from pairs (prompt x, chosen y_w, rejected y_l) with a frozen reference
pi_ref: the implicit reward of a completion is r = beta * (log pi(y|x) - log pi_ref(y|x)), and the loss is
-log sigmoid(r_w - r_l).  ``sequence_logps`` turns logits into the log pi(y|x) that the loss needs
(``pair_logps`` runs a model on a batch of pairs); ``dpo_loss`` checks the four log-prob vectors and the
settings in one call (``_check_dpo_inputs``) and hands them to ``LOSS_FUNCTIONS[loss_type]``: one small
function per loss type, written like its TRL branch, naming its paper and that branch.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F

from ._checks import check_float, check_integer, check_rank, shape_str

__all__ = ["sequence_logps", "pair_logps", "dpo_loss", "LOSS_FUNCTIONS", "LOSS_TYPES", "TRL_LOSS_TYPES",
           "VARIANT_KEYWORDS"]

#: The loss types of TRL 1.16's DPOTrainer, in the order of its ``_compute_loss``.
TRL_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
#: Every loss type ``dpo_loss`` accepts: TRL's, plus ``cdpo`` (conservative DPO, which older TRL applied
#: through ``sigmoid`` + ``label_smoothing`` and TRL 1.16 no longer has).
LOSS_TYPES = (*TRL_LOSS_TYPES, "cdpo")

#: The variant keywords each loss type reads; any other keyword is an error.
VARIANT_KEYWORDS = {
    "ipo": ("chosen_lengths", "rejected_lengths"),
    "sigmoid_norm": ("chosen_lengths", "rejected_lengths"),
    "sft": ("chosen_scored_tokens",),
    "discopop": ("discopop_tau",),
    "bco_pair": ("bco_delta",),
}
_ALL_KEYWORDS = ("chosen_lengths", "rejected_lengths", "chosen_scored_tokens", "discopop_tau", "bco_delta")
_REQUIRED = {"ipo": ("chosen_lengths", "rejected_lengths"), "sigmoid_norm": ("chosen_lengths", "rejected_lengths"),
             "sft": ("chosen_scored_tokens",)}
# label_smoothing: which loss types read it, and the interval it must lie in (closed/open ends as written)
_SMOOTHING = {"exo_pair": "(0, 1)", "robust": "[0, 0.5)", "aot": "[0, 1]", "aot_unpaired": "[0, 1]", "cdpo": "[0, 1]"}
_DISCOPOP_TAU = 0.05  # TRL 1.16's DPOConfig.discopop_tau default


# ---------------------------------------------------------------- sequence log-probs


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                   average: bool = False) -> torch.Tensor:
    """log pi(completion | prompt) per sequence: the sum (or mean) of next-token log-probs.

    ``logits``: Float[Tensor, "batch seq vocab"], a causal LM's output on ``labels`` (position t
    predicts token t + 1).  ``labels``: Long[Tensor, "batch seq"], unshifted; -100 marks unscored
    tokens.  ``mask``: Bool or 0/1 [batch, seq], the label tokens scored (TRL's completion_mask).
    Returns Float[Tensor, "batch"]: the sum over t of log softmax(logits[:, t])[labels[:, t + 1]]
    over the scored set ``mask[:, 1:] & (labels[:, 1:] != -100)``; ``average=True`` divides each
    row by its scored count, clamped at 1 (TRL's ``clamp(min=1)``).  An unscored label is never
    read; a scored one outside [0, vocab) is an error.  float16/bfloat16 are computed in float32.

    The sum is the completion's log-likelihood (chain rule): DPO's log pi(y|x) (Rafailov et al.
    2023, Eq. 7) and TRL 1.16's (``DPOTrainer._compute_loss`` sums its fused head's per-token
    log-probs over ``shift_completion_mask``).  The mean is x-transformers' ``DPO`` (seed 001).
    """
    _check_sequence_inputs(logits, labels, mask, average)  # types, shapes, 0/1 mask, bool average
    targets = labels[:, 1:].long()  # [batch, seq - 1]: position t's target is label t + 1
    scored = targets != -100  # [batch, seq - 1]
    if mask is not None:
        scored = scored & mask[:, 1:].bool()  # the mask is aligned with the shifted targets
    _check_scored_ids(targets[scored], logits)  # every scored label is a token id in [0, vocab)
    z = logits[:, :-1]  # [batch, seq - 1, vocab]: the last row predicts nothing
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z  # half precision in float32
    log_probs = z.log_softmax(-1)  # [batch, seq - 1, vocab]
    index = targets.masked_fill(~scored, 0)  # an unscored label is never read: any value will do
    picked = log_probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)  # [batch, seq - 1]
    picked = picked.masked_fill(~scored, 0.0)  # unscored positions add exactly 0 (and no gradient)
    total = picked.sum(-1)  # [batch]
    if average:
        return total / scored.sum(-1).clamp(min=1).to(total.dtype)  # [batch]
    return total


def _check_sequence_inputs(logits, labels, mask, average) -> None:
    """``sequence_logps``'s argument checks: types, shapes, a mask of 0/1, a bool ``average``."""
    check_float("logits", logits)
    check_rank("logits", logits, (3,), "[batch, seq, vocab]")
    check_integer("labels", labels, "token ids")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {list(logits.shape[:-1])} (logits {shape_str(logits)} without the vocab dim: "
            f"the unshifted token ids), got {shape_str(labels)}"
        )
    if mask is not None:
        if not torch.is_tensor(mask):
            raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if mask.shape != labels.shape:
            raise ValueError(
                f"mask must have the labels' shape {shape_str(labels)} (it marks the label tokens scored, "
                f"before the shift), got {shape_str(mask)}"
            )
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"mask must hold only 0 and 1 (or bools), got other values in shape {shape_str(mask)}")
    if not isinstance(average, bool):
        raise TypeError(f"average must be a bool, got {type(average).__name__}")


def _check_scored_ids(scored_ids: torch.Tensor, logits: torch.Tensor) -> None:
    """The labels at scored positions must be token ids of the logits' vocabulary."""
    vocab = logits.shape[-1]
    if scored_ids.numel() and (int(scored_ids.min()) < 0 or int(scored_ids.max()) >= vocab):
        value = int(scored_ids.min()) if int(scored_ids.min()) < 0 else int(scored_ids.max())
        raise ValueError(
            f"labels holds token id {value} at a scored position, outside [0, {vocab}) for logits of shape "
            f"{shape_str(logits)}; the only other value allowed is -100"
        )


def pair_logps(model, batch: dict, *, concatenated: bool = True, average: bool = False):
    """``(chosen, rejected)`` log-probs, Float[batch] each, of ``model`` on the batch's completions.

    ``batch`` holds ``chosen_ids``, ``rejected_ids`` and ``chosen_mask``, ``rejected_mask`` (the ``mask`` of
    ``sequence_logps``).  ``concatenated=True`` runs one forward on ``[chosen; rejected]`` (TRL's way, one pass
    through the weights); ``False`` runs two.  Both sides are right-padded to a common length first.
    """
    ids_w, ids_l = batch["chosen_ids"], batch["rejected_ids"]
    m_w, m_l = batch["chosen_mask"], batch["rejected_mask"]
    if concatenated:
        width = max(ids_w.shape[1], ids_l.shape[1])
        ids = torch.cat([F.pad(ids_w, (0, width - ids_w.shape[1])), F.pad(ids_l, (0, width - ids_l.shape[1]))])
        mask = torch.cat([F.pad(m_w, (0, width - m_w.shape[1])), F.pad(m_l, (0, width - m_l.shape[1]))])
        logps = sequence_logps(model(ids), ids, mask, average=average)  # [2 * batch]
        return logps.chunk(2)
    return (sequence_logps(model(ids_w), ids_w, m_w, average=average),
            sequence_logps(model(ids_l), ids_l, m_l, average=average))


# ---------------------------------------------------------------- the loss


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             **variant_kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO family's per-pair losses and the detached implicit rewards.

    Inputs: four Float[Tensor, "batch"], summed completion log-probs (``sequence_logps``) of the
    policy and the frozen reference on each pair's chosen and rejected completion.  Returns
    ``(losses, chosen_rewards, rejected_rewards)``, each [batch].  With h = policy - ref, the
    rewards are beta h, detached (TRL's ``rewards/chosen``, ``rewards/rejected``); the sigmoid
    loss is -log sigmoid(beta (h_w - h_l)) (Rafailov et al. 2023, Eq. 7).  Every input is checked
    in one call, then ``LOSS_FUNCTIONS[loss_type]`` computes the losses.
    ``label_smoothing`` is read by exo_pair, robust, aot, aot_unpaired, cdpo; ``variant_kwargs``:
    ``chosen_lengths``, ``rejected_lengths`` (ipo, sigmoid_norm; TRL's ``completion_mask.sum(1)``),
    ``chosen_scored_tokens`` (sft; ``mask[:, 1:].sum(-1)``), ``discopop_tau``, ``bco_delta``.
    Upstream: TRL 1.16 ``DPOTrainer._compute_loss``; ``losses.mean()`` is its loss (with its
    defaults: ``f_divergence_type="reverse_kl"``, no ``ld_alpha``, no ``use_weighting``).
    Differences from TRL: chapter 09's table.
    """
    beta, params = _check_dpo_inputs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                     ref_rejected_logps, beta, loss_type, label_smoothing,
                                     variant_kwargs)
    losses = LOSS_FUNCTIONS[loss_type](policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                       ref_rejected_logps, beta, **params)  # [batch]
    chosen_rewards = (beta * (policy_chosen_logps - ref_chosen_logps)).detach()  # [batch]
    rejected_rewards = (beta * (policy_rejected_logps - ref_rejected_logps)).detach()  # [batch]
    return losses, chosen_rewards, rejected_rewards


def _check_logps(**named: torch.Tensor) -> None:
    """The four log-prob vectors: floating, 1-D [batch], one shape."""
    first_name, first = None, None
    for name, t in named.items():
        check_float(name, t)
        check_rank(name, t, (1,), "[batch] (one summed log-prob per sequence)")
        if first is None:
            first_name, first = name, t
        elif t.shape != first.shape:
            raise ValueError(
                f"{name} has shape {shape_str(t)} but {first_name} has shape {shape_str(first)}: the four log-prob "
                "vectors must hold one value per pair, in the same order"
            )


def _check_lengths(name: str, lengths, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Token counts [batch], ``like``'s shape: an integer tensor, or a floating one holding whole numbers;
    never bool.  Returned as ``dtype`` (the dtype of the log-ratios they divide)."""
    if not torch.is_tensor(lengths):
        raise TypeError(f"{name} must be a tensor of token counts [batch], got {type(lengths).__name__}")
    if lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(f"{name} must hold token counts (an integer tensor, e.g. mask.sum(-1)), got dtype "
                        f"{lengths.dtype}: a mask is not a count")
    if lengths.shape != like.shape:
        raise ValueError(f"{name} must have the log-probs' shape {shape_str(like)}, got {shape_str(lengths)}")
    if lengths.is_floating_point() and not (torch.isfinite(lengths) & (lengths == lengths.round())).all():
        raise ValueError(f"{name} must hold whole token counts, got {lengths.tolist()}")
    if (lengths < 0).any():
        raise ValueError(f"{name} holds a negative count, got {lengths.tolist()}")
    return lengths.to(dtype)


def _check_reference(**named: torch.Tensor) -> None:
    """A reference log-prob with a grad_fn came from a forward with autograd on: refused."""
    for name, t in named.items():
        if t.grad_fn is not None:
            raise ValueError(
                f"{name} was computed with autograd on (grad_fn={type(t.grad_fn).__name__}): backward "
                "would send gradients into the reference model. Compute it under torch.no_grad() or pass "
                f"{name}.detach()"
            )


def _check_scalar(name: str, value) -> float:
    if torch.is_tensor(value) and value.dim() == 0:
        value = float(value)
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _check_positive(name: str, value, what: str = "") -> float:
    """A finite real number > 0 (``beta``, SPIN's ``lam``, ``discopop_tau``); ``what`` says what it is."""
    value = _check_scalar(name, value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0{what}, got {value}")
    return value


def _check_dpo_inputs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                      loss_type, label_smoothing, variant_kwargs: dict) -> tuple[float, dict]:
    """Every check of ``dpo_loss``, in one place (chapter 09's table lists what it refuses that TRL accepts).

    Returns ``beta`` as a float and the keywords ``LOSS_FUNCTIONS[loss_type]`` reads: ``label_smoothing`` for
    the types that read it, the counts in the log-ratios' dtype, ``discopop_tau`` (default TRL's 0.05) and
    ``bco_delta`` (None: 0, TRL 1.16's missing running mean).
    """
    logps = {"policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps,
             "ref_chosen_logps": ref_chosen_logps, "ref_rejected_logps": ref_rejected_logps}
    _check_logps(**logps)
    if not isinstance(loss_type, str) or loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}")
    _check_reference(ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    beta = _check_positive("beta", beta)
    label_smoothing = _check_scalar("label_smoothing", label_smoothing)

    unknown = sorted(set(variant_kwargs) - set(_ALL_KEYWORDS))
    if unknown:
        raise TypeError(f"dpo_loss got unknown keyword(s) {unknown}; the variant keywords are {list(_ALL_KEYWORDS)}")
    allowed = VARIANT_KEYWORDS.get(loss_type, ())
    unused = sorted(k for k in variant_kwargs if k not in allowed)
    if unused:
        users = {k: [t for t, ks in VARIANT_KEYWORDS.items() if k in ks] for k in unused}
        hint = ("; sft divides by the scored count: chosen_scored_tokens=mask[:, 1:].sum(-1)"
                if loss_type == "sft" and "chosen_lengths" in unused else "")
        raise TypeError(
            f"loss_type={loss_type!r} does not use {unused}; "
            + "; ".join(f"{k} is read by {v}" for k, v in users.items()) + hint
        )
    missing = [k for k in _REQUIRED.get(loss_type, ()) if variant_kwargs.get(k) is None]
    if missing:
        what = ("the number of scored chosen tokens, mask[:, 1:].sum(-1)" if loss_type == "sft" else
                "completion token counts, TRL's completion_mask.sum(-1) (the unshifted mask)")
        raise TypeError(f"loss_type={loss_type!r} needs {missing}: {what}")

    if loss_type == "sigmoid" and label_smoothing != 0.0:
        raise ValueError(
            f"label_smoothing={label_smoothing} with loss_type='sigmoid': TRL 1.16 silently ignores it there (older "
            "TRL applied conservative DPO); lossbook refuses. Use loss_type='cdpo' for conservative DPO, "
            "'robust' for the unbiased flip-rate loss, or label_smoothing=0.0"
        )
    if loss_type not in _SMOOTHING and label_smoothing != 0.0:
        users = sorted(_SMOOTHING)
        raise ValueError(f"loss_type={loss_type!r} does not use label_smoothing (got {label_smoothing}); "
                         f"it is read by {users}")
    params = {}
    if loss_type in _SMOOTHING:
        e = label_smoothing
        ok = {"exo_pair": 0 < e < 1, "robust": 0 <= e < 0.5}.get(loss_type, 0 <= e <= 1)
        if not ok:
            raise ValueError(f"label_smoothing must lie in {_SMOOTHING[loss_type]} for loss_type={loss_type!r}, "
                             f"got {e}")
        params["label_smoothing"] = e

    # the counts divide the log-ratios: they take the dtype of (policy - ref), the four log-probs' promotion
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in logps.values()))
    if loss_type in ("ipo", "sigmoid_norm"):
        for name in ("chosen_lengths", "rejected_lengths"):
            params[name] = _check_lengths(name, variant_kwargs[name], policy_chosen_logps, dtype)
    elif loss_type == "sft":
        n = _check_lengths("chosen_scored_tokens", variant_kwargs["chosen_scored_tokens"], policy_chosen_logps,
                           dtype)
        if not n.sum() > 0:  # TRL's mean over no token is nan, silently
            raise ValueError(f"loss_type='sft' needs a scored chosen token, got chosen_scored_tokens "
                             f"{n.tolist()}")
        params["chosen_scored_tokens"] = n
    elif loss_type == "discopop":
        tau = variant_kwargs.get("discopop_tau")
        # inf would make s = sigmoid(0) = 1/2: no switch at all
        tau = _DISCOPOP_TAU if tau is None else _check_positive("discopop_tau", tau, " (DiscoPOP's temperature)")
        params["discopop_tau"] = tau
    elif loss_type == "bco_pair":
        shift = variant_kwargs.get("bco_delta")
        shift = 0.0 if shift is None else shift
        if torch.is_tensor(shift) and shift.dim() != 0:
            raise ValueError(f"bco_delta must be a number or a 0-dim tensor (a running mean), got {shape_str(shift)}")
        if not torch.is_tensor(shift):
            shift = _check_scalar("bco_delta", shift)
        params["bco_delta"] = shift
    return beta, params


# ---------------------------------------------------------------- one function per loss type
# Each takes the four summed log-probs [batch] under TRL's names (``chosen_logps`` is the policy's), beta and
# the keywords its type reads, already checked by ``dpo_loss``, and returns the per-pair losses [batch]. With
# h = log pi - log pi_ref (the log-ratios), h_w chosen, h_l rejected, d = h_w - h_l.  The arithmetic is in
# TRL's order, so the values are TRL's to the last bit where TRL's inputs are the same.


def sigmoid_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """DPO: -log sigmoid(beta (h_w - h_l)), h = log pi(y|x) - log pi_ref(y|x), per pair.

    Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
    Reward Model", Eq. 7.  TRL 1.16: ``DPOTrainer._compute_loss``, branch
    ``loss_type == "sigmoid"``.  The four log-probs: Float[Tensor, "batch"] (TRL's names:
    ``chosen_logps`` is the policy's); returns the per-pair losses [batch].
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    delta_score = chosen_logratios - rejected_logratios  # [batch] d = h_w - h_l
    return -F.logsigmoid(beta * delta_score)


def hinge_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """SLiC's hinge on the implicit reward margin: relu(1 - beta d), d = h_w - h_l.

    Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", its hinge
    calibration loss.  TRL 1.16: ``DPOTrainer._compute_loss``, branch ``loss_type == "hinge"``.
    Float[Tensor, "batch"] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    delta_score = chosen_logratios - rejected_logratios  # [batch] d
    return torch.relu(1 - beta * delta_score)


def ipo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
             chosen_lengths, rejected_lengths):
    """IPO: ((h_w / n_w - h_l / n_l) - 1 / (2 beta))^2, n the completion lengths (clamped at 1).

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", Eq. 17 (beta is its tau).  TRL 1.16: ``DPOTrainer._compute_loss``, branch
    ``loss_type == "ipo"``, whose division by the length is TRL's, not the paper's (TRL says the
    authors confirmed it).  Log-probs and lengths: [batch], the lengths TRL's
    ``completion_mask.sum(dim=1)`` (the unshifted count); returns [batch].
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    chosen_avg_score = chosen_logratios / chosen_lengths.clamp(min=1.0)  # [batch] per token
    rejected_avg_score = rejected_logratios / rejected_lengths.clamp(min=1.0)  # [batch] per token
    ipo_delta = chosen_avg_score - rejected_avg_score  # [batch]
    return (ipo_delta - 1 / (2 * beta)) ** 2


def exo_pair_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                  label_smoothing):
    """EXO, pairwise: KL(q || p), q = softmax over the pair of (beta d, 0), p = (1 - e, e).

    Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment", Eq. 16;
    e = ``label_smoothing`` in (0, 1).  TRL 1.16: ``DPOTrainer._compute_loss``, branch
    ``loss_type == "exo_pair"`` (its epsilon is float32; here the log-ratios' dtype).
    [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    delta_score = chosen_logratios - rejected_logratios  # [batch] d
    logits = beta * delta_score  # [batch] once; TRL writes self.beta * delta_score each time
    epsilon = torch.tensor(label_smoothing, dtype=logits.dtype, device=logits.device)
    qw = torch.sigmoid(logits)
    log_qw = F.logsigmoid(logits)
    log_pw = torch.log1p(-epsilon)
    ql = torch.sigmoid(-logits)
    log_ql = F.logsigmoid(-logits)
    log_pl = torch.log(epsilon)
    return qw * (log_qw - log_pw) + ql * (log_ql - log_pl)


def nca_pair_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """NCA, pairwise: -log sigmoid(r_w) - log sigmoid(-r_w) / 2 - log sigmoid(-r_l) / 2, r = beta h.

    Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards",
    its pairwise NCA loss.  TRL 1.16: ``DPOTrainer._compute_loss``, branch
    ``loss_type == "nca_pair"``.  [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    chosen_rewards = beta * chosen_logratios
    rejected_rewards = beta * rejected_logratios
    return (-F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards)
            - 0.5 * F.logsigmoid(-rejected_rewards))


def robust_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                label_smoothing):
    """Robust DPO: ((1 - e) l(d) - e l(-d)) / (1 - 2 e), l(d) = -log sigmoid(beta d).

    Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with Noisy Feedback":
    averaged over labels flipped with probability e = ``label_smoothing`` in [0, 0.5), it is the
    clean loss.  TRL 1.16: ``DPOTrainer._compute_loss``, branch ``loss_type == "robust"``.
    [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    delta_score = chosen_logratios - rejected_logratios  # [batch] d
    logits = beta * delta_score  # [batch] once; TRL writes self.beta * delta_score each time
    clean_loss_term = -(1 - label_smoothing) * F.logsigmoid(logits)
    flipped_loss_term = -label_smoothing * F.logsigmoid(-logits)
    return (clean_loss_term - flipped_loss_term) / (1 - 2 * label_smoothing)


def bco_pair_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                  bco_delta=0.0):
    """BCO, pairwise: -log sigmoid(beta h_w - delta) - log sigmoid(-(beta h_l - delta)).

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment", whose
    delta is a running mean of the rewards: ``bco_delta``, a number or a 0-dim tensor (default 0:
    TRL 1.16 keeps no running mean).  TRL 1.16: ``DPOTrainer._compute_loss``, branch
    ``loss_type == "bco_pair"``.  [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    chosen_rewards = beta * chosen_logratios - bco_delta
    rejected_rewards = beta * rejected_logratios - bco_delta
    return -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)


def sppo_hard_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """SPPO with hard probabilities: (h_w - 1 / (2 beta))^2 + (h_l + 1 / (2 beta))^2.

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment", Eq. 4.7
    with P = 1 for the winner and 0 for the loser.  TRL 1.16: ``DPOTrainer._compute_loss``,
    branch ``loss_type == "sppo_hard"``.  [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    winner_margin_error = (chosen_logratios - 0.5 / beta) ** 2
    loser_margin_error = (rejected_logratios + 0.5 / beta) ** 2
    return winner_margin_error + loser_margin_error


def aot_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
             label_smoothing):
    """AOT, paired: the cDPO loss of beta (sort(pi_w - pi_l) - sort(ref_w - ref_l)).

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
    paired form.  Each difference is sorted over the batch, so the losses come in sorted order,
    not the pairs' order: only their mean compares per pair.  TRL 1.16:
    ``DPOTrainer._compute_loss``, branch ``loss_type == "aot"``.  [batch] in and out.
    """
    logratios = chosen_logps - rejected_logps  # [batch] the policy's
    ref_logratios = ref_chosen_logps - ref_rejected_logps  # [batch] the reference's
    logratios_sorted, _ = torch.sort(logratios, dim=0)
    ref_logratios_sorted, _ = torch.sort(ref_logratios, dim=0)
    delta = logratios_sorted - ref_logratios_sorted
    logits = beta * delta  # [batch] once; TRL writes self.beta * delta in each term
    return (-F.logsigmoid(logits) * (1 - label_smoothing)
            - F.logsigmoid(-logits) * label_smoothing)


def aot_unpaired_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                      label_smoothing):
    """AOT, unpaired: the cDPO loss of beta (sort(h_w) - sort(h_l)), each sorted over the batch.

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
    unpaired form (losses in sorted order, as ``aot_loss``).  TRL 1.16:
    ``DPOTrainer._compute_loss``, branch ``loss_type == "aot_unpaired"``.  [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    chosen_logratios_sorted, _ = torch.sort(chosen_logratios, dim=0)
    rejected_logratios_sorted, _ = torch.sort(rejected_logratios, dim=0)
    delta = chosen_logratios_sorted - rejected_logratios_sorted
    logits = beta * delta  # [batch] once; TRL writes self.beta * delta in each term
    return (-F.logsigmoid(logits) * (1 - label_smoothing)
            - F.logsigmoid(-logits) * label_smoothing)


def apo_zero_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """APO-zero: (1 - sigmoid(beta h_w)) + sigmoid(beta h_l): raise the chosen, lower the rejected.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
    Eq. 7.  TRL 1.16: ``DPOTrainer._compute_loss``, branch ``loss_type == "apo_zero"``.
    [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    losses_chosen = 1 - torch.sigmoid(beta * chosen_logratios)
    losses_rejected = torch.sigmoid(beta * rejected_logratios)
    return losses_chosen + losses_rejected


def apo_down_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """APO-down: sigmoid(beta h_w) + 1 - sigmoid(beta d): lower both, the rejected more.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
    Eq. 8.  TRL 1.16: ``DPOTrainer._compute_loss``, branch ``loss_type == "apo_down"``.
    [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    losses_chosen = torch.sigmoid(beta * chosen_logratios)
    losses_rejected = 1 - torch.sigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses_chosen + losses_rejected


def discopop_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                  discopop_tau=_DISCOPOP_TAU):
    """DiscoPOP: (1 - s) (-log sigmoid(beta d)) + s exp(-beta d), s = sigmoid(beta d / tau).

    Lu et al. 2024, "Discovering Preference Optimization Algorithms with and for Large Language
    Models", Eq. 5; tau = ``discopop_tau`` (TRL's default 0.05).  TRL 1.16:
    ``DPOTrainer._compute_loss``, branch ``loss_type == "discopop"``, except s exp(-beta d) =
    exp(-beta d + log s): TRL's product is inf * 0 = nan for a very wrong pair (beta d below
    about -89 in float32), this is its finite limit.  [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    delta_score = chosen_logratios - rejected_logratios  # [batch] d
    logits = delta_score * beta
    log_ratio_modulation = torch.sigmoid(logits / discopop_tau)  # [batch] s, the mixing weight
    logistic_component = -F.logsigmoid(logits)
    exp_component = torch.exp(-logits + F.logsigmoid(logits / discopop_tau))  # exp(-logits) * s
    return logistic_component * (1 - log_ratio_modulation) + exp_component


def sft_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
             chosen_scored_tokens):
    """SFT on the chosen completions: -sum(chosen_logps) / sum(chosen_scored_tokens).

    The negative log-likelihood per scored chosen token: one batch value, repeated per pair as
    TRL does.  TRL 1.16: ``DPOTrainer._compute_loss``, branch ``loss_type == "sft"``, which
    averages per-token log-probs over ``shift_completion_mask``: the same number, from the
    summed log-probs and the scored counts [batch].  The other inputs are not read.
    """
    batch_loss = -chosen_logps.sum() / chosen_scored_tokens.sum()
    return batch_loss.expand(chosen_logps.shape[0])  # [batch], one value repeated


def sigmoid_norm_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
                      chosen_lengths, rejected_lengths):
    """DPO on per-token log-ratios: -log sigmoid(beta (h_w / n_w - h_l / n_l)), n as in IPO.

    The length normalisation of SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization
    with a Reference-Free Reward"), keeping the reference.  TRL 1.16:
    ``DPOTrainer._compute_loss``, branch ``loss_type == "sigmoid_norm"``.  [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    chosen_avg_score = chosen_logratios / chosen_lengths.clamp(min=1.0)  # [batch] per token
    rejected_avg_score = rejected_logratios / rejected_lengths.clamp(min=1.0)  # [batch] per token
    delta = chosen_avg_score - rejected_avg_score
    return -F.logsigmoid(beta * delta)


def cdpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
              label_smoothing):
    """Conservative DPO: -(1 - e) log sigmoid(beta d) - e log sigmoid(-beta d), e = label_smoothing.

    The cross-entropy against the soft label (1 - e, e): Mitchell 2023, "A note on DPO with
    noisy preferences & relationship to IPO", Eq. 3.  Not in TRL 1.16: older TRL computed it in
    ``DPOTrainer.dpo_loss``, branch ``loss_type == "sigmoid"``, with ``label_smoothing``.
    [batch] in and out.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # [batch] h_l
    delta_score = chosen_logratios - rejected_logratios  # [batch] d
    logits = beta * delta_score  # [batch] once; older TRL wrote self.beta * logits each time
    return (-F.logsigmoid(logits) * (1 - label_smoothing)
            - F.logsigmoid(-logits) * label_smoothing)


#: loss_type -> the function that computes its per-pair losses, in ``LOSS_TYPES``'s order
#: (``dpo_loss`` checks the inputs, then calls it).
LOSS_FUNCTIONS = {
    "sigmoid": sigmoid_loss, "hinge": hinge_loss, "ipo": ipo_loss, "exo_pair": exo_pair_loss,
    "nca_pair": nca_pair_loss, "robust": robust_loss, "bco_pair": bco_pair_loss, "sppo_hard": sppo_hard_loss,
    "aot": aot_loss, "aot_unpaired": aot_unpaired_loss, "apo_zero": apo_zero_loss, "apo_down": apo_down_loss,
    "discopop": discopop_loss, "sft": sft_loss, "sigmoid_norm": sigmoid_norm_loss, "cdpo": cdpo_loss,
}
