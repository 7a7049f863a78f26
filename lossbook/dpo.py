"""Direct Preference Optimization and its family: sequence log-probs, and the loss of every TRL loss type.

Chapter: notebooks/09_dpo.ipynb.  Upstream: TRL 1.16 ``trl.trainer.dpo_trainer.DPOTrainer._compute_loss``
(its ``loss_type`` branches) and x-transformers' ``DPO`` (seed 001, whose log-prob gather is unshifted).

DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model", Eq. 7) trains a policy pi from pairs (prompt x, chosen y_w, rejected y_l) with a frozen reference
pi_ref: the implicit reward of a completion is r = beta * (log pi(y|x) - log pi_ref(y|x)), and the loss is
-log sigmoid(r_w - r_l).  ``sequence_logps`` turns logits into the log pi(y|x) that the loss needs;
``dpo_loss`` turns the four log-prob vectors into per-pair losses and the detached implicit rewards.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from ._checks import check_float, check_integer, check_rank, shape_str

__all__ = ["sequence_logps", "dpo_loss", "LOSS_TYPES", "TRL_LOSS_TYPES", "VARIANT_KEYWORDS"]

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


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                   average: bool = False) -> torch.Tensor:
    """log pi(completion | prompt) per sequence: the sum (or mean) of the next-token log-probs of the labels.

    ``logits``: Float[Tensor, "batch seq vocab"], a causal LM's output on ``labels`` (position t predicts
    token t + 1).  ``labels``: Long[Tensor, "batch seq"], the *unshifted* token ids; ``-100`` marks tokens
    that are not scored (padding, prompt).  ``mask``: Bool or 0/1 [batch, seq], the labels' shape, marking
    the label tokens that are scored (the completion: TRL's ``completion_mask``).  Returns Float[Tensor,
    "batch"]: sum over t of log softmax(logits[:, t])[labels[:, t + 1]] over the scored set
    ``mask[:, 1:] & (labels[:, 1:] != -100)``; ``average=True`` divides each row by its number of scored
    tokens (clamped at 1, so a row with none gives 0, as TRL's ``clamp(min=1)``).  A label at an
    unscored position is never read (any value); a scored one outside ``[0, vocab)`` is an error.

    The sum is the log-likelihood of the completion (chain rule), the quantity in the DPO paper (Rafailov et
    al. 2023, Eq. 7) and in TRL; the mean is what x-transformers' DPO uses (seed 001).  The first label is
    never scored (nothing predicts it), and the last logit row scores nothing.  Half precision is computed
    in float32; float64 stays float64 (for gradcheck).
    """
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
    vocab = logits.shape[-1]
    targets = labels[:, 1:].long()  # [batch, seq - 1]: position t's target is label t + 1
    scored = targets != -100  # [batch, seq - 1]
    if mask is not None:
        scored = scored & mask[:, 1:].bool()  # the mask is aligned with the shifted targets
    bad = targets[scored]
    if bad.numel() and (int(bad.min()) < 0 or int(bad.max()) >= vocab):
        value = int(bad.min()) if int(bad.min()) < 0 else int(bad.max())
        raise ValueError(
            f"labels holds token id {value} at a scored position, outside [0, {vocab}) for logits of shape "
            f"{shape_str(logits)}; the only other value allowed is -100"
        )
    z = logits[:, :-1]  # [batch, seq - 1, vocab]: the last row predicts nothing
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    log_probs = z.log_softmax(-1)  # [batch, seq - 1, vocab]
    index = targets.masked_fill(~scored, 0)  # an unscored label is never read: any value will do
    picked = log_probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)  # [batch, seq - 1]
    picked = picked.masked_fill(~scored, 0.0)  # unscored positions contribute exactly 0 (and no gradient)
    total = picked.sum(-1)  # [batch]
    if average:
        return total / scored.sum(-1).clamp(min=1).to(total.dtype)  # [batch]
    return total


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


def _check_lengths(name: str, lengths, like: torch.Tensor) -> torch.Tensor:
    """Token counts [batch]: an integer tensor, or a floating one holding whole numbers; never bool."""
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
    return lengths.to(like.dtype)


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


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    **variant_kwargs,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO family's per-pair losses and the detached implicit rewards.

    Inputs: four Float[Tensor, "batch"], summed completion log-probs (``sequence_logps``) of the policy and
    the reference on the chosen and rejected completion of each pair.  Returns ``(losses, chosen_rewards,
    rejected_rewards)``, each [batch]; the rewards are ``beta * (policy - ref)``, detached (TRL's
    ``rewards/chosen`` metrics).  ``losses.mean()`` is TRL 1.16's loss for that ``loss_type`` (with
    ``f_divergence_type="reverse_kl"``, no ``ld_alpha``, no ``use_weighting``: TRL's defaults).

    With h_w = policy_chosen - ref_chosen, h_l = policy_rejected - ref_rejected, d = h_w - h_l (``TRL :N`` is the
    line of that branch in the installed TRL 1.16.0 ``trl/trainer/dpo_trainer.py``, ``_compute_loss`` at :1285):

    * ``sigmoid`` (TRL :1387): -log sigmoid(beta d).  DPO, Rafailov et al. 2023 (arXiv 2305.18290), Eq. 7.
    * ``cdpo`` (lossbook only): -(1 - e) log sigmoid(beta d) - e log sigmoid(-beta d), e = ``label_smoothing``.
      Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"); older TRL applied it through
      ``sigmoid`` + ``label_smoothing``.
    * ``hinge`` (TRL :1390): relu(1 - beta d).  SLiC-HF, Zhao et al. 2023 (arXiv 2305.10425), its hinge calibration
      loss.
    * ``ipo`` (TRL :1393): ((h_w / n_w - h_l / n_l) - 1 / (2 beta))^2, n the completion lengths ``chosen_lengths`` and
      ``rejected_lengths`` (clamped at 1).  IPO, Azar et al. 2023 (arXiv 2310.12036), Eq. 17 (beta is its tau); the
      division by the length is TRL's, not the paper's (TRL says the authors confirmed it).
    * ``exo_pair`` (TRL :1406): KL(q || p), q = softmax over the pair of (beta d, 0), p = (1 - e, e).  EXO, Ji et al.
      2024 (arXiv 2402.00856), Eq. 16.  Needs 0 < ``label_smoothing`` < 1 (the paper suggests 1e-3).
    * ``nca_pair`` (TRL :1419): -log sigmoid(beta h_w) - 1/2 log sigmoid(-beta h_w) - 1/2 log sigmoid(-beta h_l).
      NCA, Chen et al. 2024 (arXiv 2402.05369), pairwise form.
    * ``robust`` (TRL :1428): ((1 - e) ell(d) - e ell(-d)) / (1 - 2e), ell(d) = -log sigmoid(beta d), e =
      ``label_smoothing`` the flip rate in [0, 0.5).  Robust DPO, Chowdhury et al. 2024 (arXiv 2403.00409).
    * ``bco_pair`` (TRL :1433): -log sigmoid(beta h_w - delta) - log sigmoid(-(beta h_l - delta)), delta =
      ``bco_delta`` (None: 0, as TRL 1.16, which keeps no running mean).  BCO, Jung et al. 2024 (arXiv 2404.04656),
      whose delta is a running mean of the rewards.
    * ``sppo_hard`` (TRL :1438): (h_w - 1 / (2 beta))^2 + (h_l + 1 / (2 beta))^2.  SPPO, Wu et al. 2024 (arXiv
      2405.00675), Eq. 4.7 with hard probabilities (P = 1 for the winner, 0 for the loser).
    * ``aot`` (TRL :1447): cDPO-smoothed logistic loss of beta (sort(pi_w - pi_l) - sort(ref_w - ref_l)), each sorted
      over the batch.  AOT, Melnyk et al. 2024 (arXiv 2406.05882), paired form.  The losses come in sorted order, not
      the pairs' order: only their mean is comparable per pair.
    * ``aot_unpaired`` (TRL :1458): the same of beta (sort(h_w) - sort(h_l)).  AOT, unpaired form.
    * ``apo_zero`` (TRL :1467): (1 - sigmoid(beta h_w)) + sigmoid(beta h_l).  APO, D'Oosterlinck et al. 2024 (arXiv
      2408.06266), Eq. 7.
    * ``apo_down`` (TRL :1475): sigmoid(beta h_w) + 1 - sigmoid(beta d).  APO, Eq. 8.
    * ``discopop`` (TRL :1483): (1 - s) (-log sigmoid(beta d)) + s exp(-beta d), s = sigmoid(beta d / tau), tau =
      ``discopop_tau`` (default 0.05, TRL's).  DiscoPOP, Lu et al. 2024 (arXiv 2406.08414), Eq. 5.  The exponential
      term is computed as exp(-beta d + log s): where TRL's exp(-beta d) * s is inf * 0 = nan (a very wrong pair, beta
      d below about -89 in float32), lossbook gives the finite limit.
    * ``sigmoid_norm`` (TRL :1504): -log sigmoid(beta (h_w / n_w - h_l / n_l)): DPO on per-token log-ratios, n as for
      ``ipo`` (the length normalisation of SimPO, Meng et al. 2024, arXiv 2405.14734, keeping the reference).
    * ``sft`` (TRL :1495): -sum(policy_chosen_logps) / sum(``chosen_scored_tokens``), the negative
      log-likelihood per chosen token (one batch value, repeated per pair as TRL does).  No scored token
      at all is an error (TRL's mean over none is nan).

    Conventions and choices (each tested):

    * ``chosen_lengths``/``rejected_lengths`` for ``ipo`` and ``sigmoid_norm`` follow TRL: the number of
      completion tokens in the *unshifted* ``completion_mask`` (``mask.sum(-1)``), clamped at 1.  With a
      non-empty prompt that is the number of scored tokens; with an empty prompt it is one more (the first
      token is in the mask but nothing scores it).  lossbook requires them (no silent default).
    * ``chosen_scored_tokens`` for ``sft`` is the other count TRL uses there: the *scored* tokens,
      ``mask[:, 1:].sum(-1)`` (TRL's ``shift_completion_mask``).  One meaning per keyword:
      ``chosen_lengths`` with ``sft`` is an error.  Counts are integer tensors (or whole floats); bool
      or fractional ones are errors.
    * ``ref_*_logps`` with a ``grad_fn`` (a reference forward run with autograd on) are an error:
      backward would fill the reference's ``.grad``.  A leaf that requires grad (gradcheck) is accepted.
    * ``beta`` must be finite and > 0.
    * ``label_smoothing`` is read by ``exo_pair``, ``robust``, ``aot``, ``aot_unpaired`` and ``cdpo``.  With
      ``sigmoid`` TRL 1.16 silently ignores it (older TRL applied cDPO); lossbook refuses a non-zero value there
      and points to ``cdpo``.  A non-zero value with any loss type that does not read it is an error too.
    * ``robust`` outside [0, 0.5) is an error (TRL warns and divides by 1 - 2e <= 0); ``exo_pair`` needs
      0 < e < 1 (TRL refuses 0; e = 1 takes log 0).
    * An unknown keyword, or a variant keyword the ``loss_type`` does not read, is an error.
    """
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    if not isinstance(loss_type, str) or loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}")
    _check_reference(ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    beta = _check_scalar("beta", beta)
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number > 0, got {beta}")
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
    if loss_type in _SMOOTHING:
        e = label_smoothing
        ok = {"exo_pair": 0 < e < 1, "robust": 0 <= e < 0.5}.get(loss_type, 0 <= e <= 1)
        if not ok:
            raise ValueError(f"label_smoothing must lie in {_SMOOTHING[loss_type]} for loss_type={loss_type!r}, "
                             f"got {e}")

    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # [batch] h_w
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [batch] h_l
    delta = chosen_logratios - rejected_logratios  # [batch] d
    logits = beta * delta  # [batch] the implicit reward margin r_w - r_l
    e = label_smoothing

    if loss_type == "sigmoid":
        losses = -F.logsigmoid(logits)
    elif loss_type == "cdpo":
        losses = -(1 - e) * F.logsigmoid(logits) - e * F.logsigmoid(-logits)
    elif loss_type == "hinge":
        losses = torch.relu(1 - logits)
    elif loss_type in ("ipo", "sigmoid_norm"):
        n_w = _check_lengths("chosen_lengths", variant_kwargs["chosen_lengths"], delta).clamp(min=1.0)
        n_l = _check_lengths("rejected_lengths", variant_kwargs["rejected_lengths"], delta).clamp(min=1.0)
        normed = chosen_logratios / n_w - rejected_logratios / n_l  # [batch] per-token log-ratio margin
        losses = (normed - 1 / (2 * beta)) ** 2 if loss_type == "ipo" else -F.logsigmoid(beta * normed)
    elif loss_type == "exo_pair":
        e_t = torch.tensor(e, dtype=logits.dtype, device=logits.device)  # as TRL: log(1 - e), log(e) in the dtype
        losses = (torch.sigmoid(logits) * (F.logsigmoid(logits) - torch.log1p(-e_t))
                  + torch.sigmoid(-logits) * (F.logsigmoid(-logits) - torch.log(e_t)))
    elif loss_type == "nca_pair":
        r_w, r_l = beta * chosen_logratios, beta * rejected_logratios
        losses = -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    elif loss_type == "robust":
        losses = (-(1 - e) * F.logsigmoid(logits) + e * F.logsigmoid(-logits)) / (1 - 2 * e)
    elif loss_type == "bco_pair":
        shift = variant_kwargs.get("bco_delta")
        shift = 0.0 if shift is None else shift
        if torch.is_tensor(shift) and shift.dim() != 0:
            raise ValueError(f"bco_delta must be a number or a 0-dim tensor (a running mean), got {shape_str(shift)}")
        if not torch.is_tensor(shift):
            shift = _check_scalar("bco_delta", shift)
        r_w, r_l = beta * chosen_logratios, beta * rejected_logratios
        losses = -F.logsigmoid(r_w - shift) - F.logsigmoid(-(r_l - shift))
    elif loss_type == "sppo_hard":
        losses = (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    elif loss_type in ("aot", "aot_unpaired"):
        if loss_type == "aot":
            a = torch.sort(policy_chosen_logps - policy_rejected_logps, dim=0).values  # [batch] sorted
            b = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0).values  # [batch] sorted
        else:
            a = torch.sort(chosen_logratios, dim=0).values
            b = torch.sort(rejected_logratios, dim=0).values
        z = beta * (a - b)
        losses = -(1 - e) * F.logsigmoid(z) - e * F.logsigmoid(-z)
    elif loss_type == "apo_zero":
        losses = (1 - torch.sigmoid(beta * chosen_logratios)) + torch.sigmoid(beta * rejected_logratios)
    elif loss_type == "apo_down":
        losses = torch.sigmoid(beta * chosen_logratios) + (1 - torch.sigmoid(logits))
    elif loss_type == "discopop":
        tau = variant_kwargs.get("discopop_tau")
        tau = 0.05 if tau is None else _check_scalar("discopop_tau", tau)
        if not tau > 0:
            raise ValueError(f"discopop_tau must be > 0, got {tau}")
        s = torch.sigmoid(logits / tau)  # [batch] the mixing weight
        # exp(-x) * s as exp(-x + log s): TRL's product is inf * 0 = nan for a very wrong pair (x << 0)
        losses = -F.logsigmoid(logits) * (1 - s) + torch.exp(-logits + F.logsigmoid(logits / tau))
    else:  # sft
        n = _check_lengths("chosen_scored_tokens", variant_kwargs["chosen_scored_tokens"], delta)
        if not n.sum() > 0:  # TRL's mean over no token is nan, silently
            raise ValueError(f"loss_type='sft' needs a scored chosen token, got chosen_scored_tokens "
                             f"{n.tolist()}")
        losses = (-policy_chosen_logps.sum() / n.sum()).expand(delta.shape[0])  # [batch], one value repeated

    chosen_rewards = (beta * chosen_logratios).detach()  # [batch]
    rejected_rewards = (beta * rejected_logratios).detach()  # [batch]
    return losses, chosen_rewards, rejected_rewards
