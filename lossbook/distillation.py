"""Knowledge distillation: the generalised Jensen-Shannon divergence between a student's and a teacher's softmax.

Chapter: notebooks/15_distillation.ipynb.  Upstream: TRL 1.16 ``trl.experimental.gkd.GKDTrainer.
generalized_jsd_loss`` (the divergence on logits) and ``trl.trainer.distillation_trainer.
_chunked_divergence_loss`` (``DistillationTrainer``'s: the same divergence from hidden states and the two
``lm_head`` weights, never materialising ``[tokens, vocab]`` logits).  Agarwal et al. 2024, "On-Policy
Distillation of Language Models: Learning from Self-Generated Mistakes", Eq. 1.

With p_s = softmax(z_s / T) (the student) and p_t = softmax(z_t / T) (the teacher), per position:

* beta = 0: the forward KL(p_t || p_s) = CE(p_t, p_s) - H(p_t) (Hinton et al. 2015's soft-target loss);
* beta = 1: the reverse KL(p_s || p_t);
* 0 < beta < 1: beta KL(p_t || m) + (1 - beta) KL(p_s || m), m = beta p_t + (1 - beta) p_s.

The generalised JSD goes to 0 (not to a KL) as beta -> 0 or 1: TRL, and lossbook, switch to the KLs at the two
end points.  No T^2 factor (as TRL): chapter 15 adds it where a soft loss is mixed with a hard-label one.

``chunked_distillation_loss`` reuses chapter 11's machinery (``lossbook.chunked``: the projection of one chunk
into a reused ``[chunk, vocab]`` buffer, the float32 accumulation of half inputs, the gradient buffers), as a
custom autograd function that keeps one log-sum-exp per token and model and recomputes each chunk's logits in
backward.  Each chunk is a set of whole rows (all of the vocabulary), so its divergence is the same pointwise
function as ``distillation_loss``'s, summed over the vocabulary.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from ._checks import check_count, check_float, check_integer, check_rank, check_tensor, shape_str
from .chunked import _HALF, _chunk_buffer, _chunk_logits, _finish_grads, _new_grads

__all__ = [
    "distillation_loss",
    "chunked_distillation_loss",
    "divergence_kind",
    "LOSS_FUNCTIONS",
    "LOGIT_GRADIENTS",
    "forward_kl",
    "reverse_kl",
    "generalized_jsd",
]


# ---------------------------------------------------------------- the divergences, pointwise [..., vocab]


def forward_kl(student_log_probs, teacher_log_probs, beta=0.0):
    """KL(p_t || p_s) per vocabulary entry: p_t (log p_t - log p_s); TRL's ``beta == 0`` branch."""
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)


def reverse_kl(student_log_probs, teacher_log_probs, beta=1.0):
    """KL(p_s || p_t) per vocabulary entry: p_s (log p_s - log p_t); TRL's ``beta == 1`` branch."""
    return F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)


def generalized_jsd(student_log_probs, teacher_log_probs, beta):
    """beta KL(p_t || m) + (1 - beta) KL(p_s || m) per entry, m = (1 - beta) p_s + beta p_t."""
    beta = torch.tensor(beta, dtype=student_log_probs.dtype, device=student_log_probs.device)
    mixture_log_probs = torch.logsumexp(
        torch.stack([student_log_probs + torch.log1p(-beta), teacher_log_probs + torch.log(beta)]),
        dim=0,
    )
    kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
    kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
    return beta * kl_teacher + (1 - beta) * kl_student


#: beta's three regimes -> the pointwise divergence (``divergence_kind`` picks one)
LOSS_FUNCTIONS = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "jsd": generalized_jsd}


def divergence_kind(beta: float) -> str:
    """``"forward_kl"`` at beta = 0, ``"reverse_kl"`` at beta = 1, else ``"jsd"`` (TRL's three branches)."""
    return "forward_kl" if beta == 0 else "reverse_kl" if beta == 1 else "jsd"


# ---------------------------------------------------------------- on logits (GKD's generalized_jsd_loss)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """The generalised JSD of softmax(student / T) and softmax(teacher / T), per position, reduced.

    ``student_logits``, ``teacher_logits`` Float[batch, seq, vocab] (any leading dims, one shape);
    ``labels`` Long[batch, seq] or None: positions with -100 are left out.  beta = 0: KL(teacher ||
    student); beta = 1: KL(student || teacher); else the generalised JSD (Agarwal et al. 2024,
    Eq. 1).
    Reduced as the sum / ``num_items_in_batch`` when given, else the mean over the kept positions
    (a fully ignored batch gives 0).  No T^2 factor.  Upstream: TRL 1.16 ``GKDTrainer.
    generalized_jsd_loss``; differences: chapter 15's table.
    """
    beta, temperature = _check_logit_inputs(
        student_logits, teacher_logits, labels, beta, temperature, num_items_in_batch
    )
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)  # [batch, seq, vocab]
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)  # [batch, seq, vocab]
    jsd = LOSS_FUNCTIONS[divergence_kind(beta)](
        student_log_probs, teacher_log_probs, beta
    )  # [b, s, v]
    if labels is not None:
        jsd = jsd[labels != -100]  # [kept, vocab]
        positions = jsd.shape[0]
    else:
        positions = jsd[..., 0].numel()  # every position kept
    if num_items_in_batch is not None:
        return jsd.sum() / num_items_in_batch  # []: a 0-dim tensor count may sit on the CPU
    return jsd.sum() / max(positions, 1)  # []


def _number(name, value, low, high, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number ({what}), got {value!r}")
    if not low(value) or not high(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def _check_settings(beta, temperature, num_items_in_batch):
    beta = _number(
        "beta",
        beta,
        lambda b: b >= 0,
        lambda b: b <= 1,
        "in [0, 1]: 0 the forward KL, 1 the reverse KL, between them the generalised JSD",
    )
    temperature = _number("temperature", temperature, lambda t: t > 0, lambda t: True, "> 0")
    if num_items_in_batch is not None:
        check_count("num_items_in_batch", num_items_in_batch)
    return beta, temperature


def _check_logit_inputs(
    student_logits, teacher_logits, labels, beta, temperature, num_items_in_batch
):
    """distillation_loss's checks, in one call; returns ``(beta, temperature)`` as floats."""
    check_float("student_logits", student_logits)
    check_float("teacher_logits", teacher_logits)
    if student_logits.dim() < 1 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have one shape [..., vocab] (the two models "
            f"share a vocabulary), got {shape_str(student_logits)} and {shape_str(teacher_logits)}"
        )
    if (
        student_logits.dtype != teacher_logits.dtype
        or student_logits.device != teacher_logits.device
    ):
        raise TypeError(
            f"student_logits and teacher_logits must share dtype and device, got "
            f"{student_logits.dtype} on {student_logits.device} and {teacher_logits.dtype} on "
            f"{teacher_logits.device}"
        )
    _check_no_nan(("student_logits", student_logits), ("teacher_logits", teacher_logits))
    if labels is not None:
        check_integer("labels", labels, "token ids (-100 marks a position left out)")
        if labels.shape != student_logits.shape[:-1]:
            raise ValueError(
                f"labels must have shape {list(student_logits.shape[:-1])} (the logits "
                f"{shape_str(student_logits)} without the vocab dim), got {shape_str(labels)}"
            )
    return _check_settings(beta, temperature, num_items_in_batch)


def _check_no_nan(*named):
    """A NaN logit or hidden state makes the divergence NaN: refused, named, instead of returned."""
    for name, t in named:
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name} (shape {shape_str(t)}) holds NaN at {int(torch.isnan(t).sum())} of "
                             f"{t.numel()} entries: the divergence would be NaN")


# ---------------------------------------------------------------- from hidden states, chunked


def chunked_distillation_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_weight: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``distillation_loss`` of ``student_hidden @ student_weight.T`` and the teacher's, by chunks.

    ``student_hidden`` Float[batch, seq, hidden_s], ``teacher_hidden`` Float[batch, seq, hidden_t],
    the two ``lm_head`` weights Float[vocab, hidden_s] and [vocab, hidden_t], ``completion_mask``
    [batch, seq] (nonzero = scored).  The largest temporaries are a few [chunk, vocab] blocks; the
    backward pass recomputes them (chapter 11).  The teacher gets no gradient.  ``chunk_size``
    defaults to ``hidden_s``.  Upstream: TRL 1.16 ``_chunked_divergence_loss`` (its loss).
    """
    chunk_size, beta, temperature = _check_hidden_inputs(
        student_hidden,
        teacher_hidden,
        student_weight,
        teacher_weight,
        completion_mask,
        beta,
        temperature,
        num_items_in_batch,
        chunk_size,
    )
    kept = completion_mask.reshape(-1).to(student_hidden.device) != 0  # [tokens]
    h_s = student_hidden.reshape(-1, student_hidden.shape[-1])  # [tokens, hidden_s]
    h_t = teacher_hidden.reshape(-1, teacher_hidden.shape[-1]).detach()  # [tokens, hidden_t]
    acc = torch.float32 if student_hidden.dtype in _HALF else student_hidden.dtype
    given = num_items_in_batch is not None  # else the kept tokens, at least 1
    denominator = (torch.as_tensor(num_items_in_batch, dtype=acc, device=h_s.device).reshape(())
                   if given else kept.sum().clamp(min=1).to(acc))  # []
    return _ChunkedDistillation.apply(
        h_s,
        student_weight,
        h_t,
        teacher_weight.detach(),
        kept,
        denominator,
        beta,
        temperature,
        chunk_size,
    )


def _check_hidden_inputs(
    student_hidden,
    teacher_hidden,
    student_weight,
    teacher_weight,
    completion_mask,
    beta,
    temperature,
    num_items_in_batch,
    chunk_size,
):
    """chunked_distillation_loss's checks, in one call; returns ``(chunk_size, beta, temperature)``."""
    for name, t in (
        ("student_hidden", student_hidden),
        ("teacher_hidden", teacher_hidden),
        ("student_weight", student_weight),
        ("teacher_weight", teacher_weight),
    ):
        check_float(name, t)
    for name, h, w in (
        ("student", student_hidden, student_weight),
        ("teacher", teacher_hidden, teacher_weight),
    ):
        if h.dim() < 2:
            raise ValueError(
                f"{name}_hidden must be [batch, seq, hidden] or [tokens, hidden], got shape "
                f"{shape_str(h)}"
            )
        check_rank(f"{name}_weight", w, (2,), "[vocab, hidden] (the lm_head's weight)")
        if w.shape[1] != h.shape[-1]:
            raise ValueError(
                f"{name}_weight must be [vocab, hidden] with hidden={h.shape[-1]} (the last dim of "
                f"{name}_hidden {shape_str(h)}), got {shape_str(w)}"
            )
        if (
            w.dtype != student_hidden.dtype
            or h.dtype != student_hidden.dtype
            or w.device != student_hidden.device
            or h.device != student_hidden.device
        ):
            raise TypeError(
                f"the hidden states and weights must share student_hidden's dtype and device "
                f"({student_hidden.dtype} on {student_hidden.device}), got {name}_hidden {h.dtype} "
                f"on {h.device} and {name}_weight {w.dtype} on {w.device}"
            )
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(
            f"student_hidden and teacher_hidden must score the same positions: shapes "
            f"{shape_str(student_hidden)} and {shape_str(teacher_hidden)} differ before the last dim"
        )
    if student_weight.shape[0] != teacher_weight.shape[0]:
        raise ValueError(
            f"the two lm_heads must share the vocabulary: student_weight {shape_str(student_weight)}, "
            f"teacher_weight {shape_str(teacher_weight)}"
        )
    _check_no_nan(("student_hidden", student_hidden), ("teacher_hidden", teacher_hidden))
    check_tensor("completion_mask", completion_mask)
    if completion_mask.shape != student_hidden.shape[:-1]:
        raise ValueError(
            f"completion_mask must have shape {list(student_hidden.shape[:-1])} (student_hidden "
            f"{shape_str(student_hidden)} without the last dim), got {shape_str(completion_mask)}"
        )
    if not bool(((completion_mask == 0) | (completion_mask == 1)).all()):
        raise ValueError(
            f"completion_mask must hold only 0 and 1 (1 = a completion token that is scored), got "
            f"values {sorted(set(completion_mask.unique().tolist()))[:8]}"
        )
    if chunk_size is None:  # as chapter 11: a [chunk, vocab] block as large as the weight gradient
        chunk_size = student_hidden.shape[-1]
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, numbers.Integral)
        or chunk_size < 1
    ):
        raise ValueError(
            f"chunk_size must be a positive int (tokens per chunk), got {chunk_size!r}"
        )
    beta, temperature = _check_settings(beta, temperature, num_items_in_batch)
    return int(chunk_size), beta, temperature


def _rows_forward_kl_(log_ps, log_pt, beta, scratch):
    """KL(p_t || p_s) of each row: sum p_t (log p_t - log p_s); overwrites both blocks."""
    return -log_ps.sub_(log_pt).mul_(log_pt.exp_()).sum(-1)  # [chunk]


def _rows_reverse_kl_(log_ps, log_pt, beta, scratch):
    """KL(p_s || p_t) of each row: sum p_s (log p_s - log p_t); overwrites both blocks."""
    return log_pt.sub_(log_ps).neg_().mul_(log_ps.exp_()).sum(-1)  # [chunk]


def _log_mixture(log_ps, log_pt, beta, out, spare):
    """log m = log((1 - beta) p_s + beta p_t) into ``out`` (``spare``: a second block, overwritten)."""
    torch.add(log_ps, math.log1p(-beta), out=out)
    torch.add(log_pt, math.log(beta), out=spare)
    return torch.logaddexp(out, spare, out=out)  # [chunk, vocab]


def _rows_jsd_(log_ps, log_pt, beta, scratch):
    """beta KL(p_t || m) + (1 - beta) KL(p_s || m) of each row (TRL's ``_jsd_tile``); overwrites everything."""
    log_m = _log_mixture(log_ps, log_pt, beta, *scratch)  # [chunk, vocab]
    ps = torch.exp(log_ps, out=scratch[1])
    kl_student = log_ps.sub_(log_m).mul_(ps).sum(-1)  # [chunk]: KL(p_s || m)
    pt = torch.exp(log_pt, out=scratch[1])
    kl_teacher = log_pt.sub_(log_m).mul_(pt).sum(-1)  # [chunk]: KL(p_t || m)
    return beta * kl_teacher + (1 - beta) * kl_student  # [chunk]


def _forward_kl_grad_(log_ps, log_pt, beta, scratch):
    """d KL(p_t || p_s) / d z_s = p_s - p_t: chapter 01's softmax - target, with a soft target."""
    return log_ps.exp_().sub_(log_pt.exp_())  # [chunk, vocab]


def _reverse_kl_grad_(log_ps, log_pt, beta, scratch):
    """d KL(p_s || p_t) / d z_s = p_s (log p_s - log p_t - KL(p_s || p_t))."""
    ps = torch.exp(log_ps, out=scratch[0])
    log_ps.sub_(log_pt)  # log p_s - log p_t
    kl = torch.mul(log_ps, ps, out=log_pt).sum(-1, keepdim=True)  # [chunk, 1]
    return log_ps.sub_(kl).mul_(ps)  # [chunk, vocab]


def _jsd_grad_(log_ps, log_pt, beta, scratch):
    """d JSD_beta / d z_s = (1 - beta) p_s (log p_s - log m - KL(p_s || m)); the m terms cancel."""
    log_m = _log_mixture(log_ps, log_pt, beta, *scratch)
    ps = torch.exp(log_ps, out=scratch[1])
    log_ps.sub_(log_m)  # log p_s - log m
    kl = torch.mul(log_ps, ps, out=log_m).sum(-1, keepdim=True)  # [chunk, 1]: KL(p_s || m)
    return log_ps.sub_(kl).mul_(ps).mul_(1 - beta)  # [chunk, vocab]


#: per regime: the divergence of each row of a chunk, and d (row divergence) / d (student logits / T); both
#: work in place on the chunk's two log-prob blocks and two scratch blocks (lossbook/derivations/distillation.py)
ROW_DIVERGENCES = {
    "forward_kl": _rows_forward_kl_,
    "reverse_kl": _rows_reverse_kl_,
    "jsd": _rows_jsd_,
}
LOGIT_GRADIENTS = {
    "forward_kl": _forward_kl_grad_,
    "reverse_kl": _reverse_kl_grad_,
    "jsd": _jsd_grad_,
}


def _log_probs_(z, temperature, lse=None):
    """log softmax(z / T) of a [chunk, vocab] block, in place; its per-row log-sum-exp is computed (forward)
    or given (backward: the saved one)."""
    z.div_(temperature)
    if lse is None:
        lse = torch.logsumexp(z, dim=-1)  # [chunk]
    return z.sub_(lse.unsqueeze(1)), lse


def _blocks(h_s, w_s, h_t, w_t, acc, chunk_size):
    """The pass's reused [chunk, vocab] blocks: one per model (chapter 11's ``_chunk_buffer``) and two scratch."""
    rows = min(chunk_size, h_s.shape[0])
    scratch = tuple(torch.empty(rows, w_s.shape[0], dtype=acc, device=h_s.device) for _ in range(2))
    return (
        _chunk_buffer(h_s, w_s, acc, chunk_size),
        _chunk_buffer(h_t, w_t, acc, chunk_size),
        scratch,
    )


class _ChunkedDistillation(torch.autograd.Function):
    """Forward: per chunk, both logits, their log-softmax (lse kept), each row's divergence.
    Backward: per chunk, both log-softmaxes again, d divergence / d z_s (``LOGIT_GRADIENTS``)
    times 1/T, 1/D on kept rows, into the gradients of the student's hidden states and weight."""

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, kept, denominator, beta, temperature, chunk_size):
        acc, tokens, kind = denominator.dtype, h_s.shape[0], divergence_kind(beta)
        lse_s = torch.empty(tokens, dtype=acc, device=h_s.device)  # [tokens]: saved for backward
        lse_t = torch.empty(tokens, dtype=acc, device=h_s.device)
        total = torch.zeros((), dtype=acc, device=h_s.device)
        buf_s, buf_t, scratch = _blocks(h_s, w_s, h_t, w_t, acc, chunk_size)
        for start in range(0, tokens, chunk_size):
            stop = min(start + chunk_size, tokens)
            log_ps, lse_s[start:stop] = _log_probs_(
                _chunk_logits(h_s[start:stop], w_s, None, acc, buf_s), temperature
            )  # [chunk, vocab]
            log_pt, lse_t[start:stop] = _log_probs_(
                _chunk_logits(h_t[start:stop], w_t, None, acc, buf_t), temperature
            )
            rows = stop - start
            per_token = ROW_DIVERGENCES[kind](
                log_ps, log_pt, beta, [b[:rows] for b in scratch]
            )  # [chunk]
            total += torch.where(kept[start:stop], per_token, 0).sum()
            del log_ps, log_pt
        del buf_s, buf_t, scratch
        ctx.save_for_backward(h_s, w_s, h_t, w_t, kept, lse_s, lse_t, denominator)
        ctx.beta, ctx.temperature, ctx.chunk_size = beta, temperature, chunk_size
        return total / denominator  # []

    @staticmethod
    def backward(ctx, grad_out):
        h_s, w_s, h_t, w_t, kept, lse_s, lse_t, denominator = ctx.saved_tensors
        acc, beta, temperature, kind = (
            denominator.dtype,
            ctx.beta,
            ctx.temperature,
            divergence_kind(ctx.beta),
        )
        grads = _new_grads(h_s, w_s, acc, (*ctx.needs_input_grad[:2], False))
        scale = grad_out.to(acc) / (
            denominator * temperature
        )  # []: d loss / d (summed divergence) / T
        buf_s, buf_t, scratch = _blocks(h_s, w_s, h_t, w_t, acc, ctx.chunk_size)
        for start in range(0, h_s.shape[0], ctx.chunk_size):
            stop = min(start + ctx.chunk_size, h_s.shape[0])
            log_ps, _ = _log_probs_(
                _chunk_logits(h_s[start:stop], w_s, None, acc, buf_s),
                temperature,
                lse_s[start:stop],
            )  # recomputed, [chunk, vocab]
            log_pt, _ = _log_probs_(
                _chunk_logits(h_t[start:stop], w_t, None, acc, buf_t),
                temperature,
                lse_t[start:stop],
            )
            g = LOGIT_GRADIENTS[kind](
                log_ps, log_pt, beta, [b[: stop - start] for b in scratch]
            )  # [chunk, V]
            g.mul_(torch.where(kept[start:stop], scale, 0).unsqueeze(1))  # left-out rows: exactly 0
            _ChunkedDistillation.project_back(g, h_s, w_s, start, stop, grads)
            del log_ps, log_pt, g
        grad_h, grad_w, _ = _finish_grads(grads, None)
        return grad_h, grad_w, None, None, None, None, None, None, None

    @staticmethod
    def project_back(g, h_s, w_s, start, stop, grads):
        """grad_h[chunk] = g W_s, grad_W_s += g^T h (float32 sums for half inputs)."""
        grad_h, grad_w, _, _ = grads
        g_in = g.to(h_s.dtype)  # [chunk, vocab]: the gradient of the input-dtype logits
        if grad_h is not None:
            torch.mm(g_in, w_s, out=grad_h[start:stop])
        if grad_w is not None:  # in the accumulation dtype (float32 for half inputs)
            grad_w.addmm_(g.T, h_s[start:stop].to(g.dtype))
