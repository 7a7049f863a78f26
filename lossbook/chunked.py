"""Chunked (fused linear) cross-entropy: the output projection and the loss, never the full logits.

Chapter: notebooks/11_memory.ipynb.  Peers: Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss`` and Apple's
Cut Cross-Entropy (Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language Models"), which do the
same on a GPU with Triton kernels.

The naive path ``causal_lm_loss(hidden @ weight.T + bias, labels)`` keeps ``[tokens, vocab]`` logits (and,
in training, their log-softmax and their gradient, each as large).  Here the tokens are cut into chunks; each
chunk's logits ``[chunk, vocab]`` are computed, reduced to a per-token log-sum-exp and the target's logit, and
freed.  The backward pass recomputes each chunk's logits from the saved hidden states and weight, turns them
into ``softmax - onehot`` in place and multiplies into the gradients of the hidden states, weight and bias.
The largest temporary is ``[chunk, vocab]``, whatever the number of tokens.

Semantics: those of ``causal_lm_loss`` / ``fixed_cross_entropy`` (``ignore_index``, ``num_items_in_batch``,
the label shift with ``shift=True``); all targets ignored and no ``num_items_in_batch``: NaN (0/0) with zero
gradients, as the naive path.

Precision: float32 and float64 inputs are computed in their own dtype (float64 for ``gradcheck``).
float16/bfloat16 inputs: each chunk's logits are computed in the input dtype (as the model's ``lm_head``
would) and upcast to float32 for the log-sum-exp, as transformers upcasts the logits; the loss is summed in
float32 and returned in float32 (as ``causal_lm_loss`` on half logits); the weight's and bias's gradients are
accumulated over chunks in float32 and rounded once.

Memory (measured with lossbook.memory.StorageTracker, tests/test_chunked_cross_entropy.py): forward keeps one
number per token (its log-sum-exp); the peak of forward + backward in float32 is the weight gradient plus one
``[chunk_size, vocab]`` float32 chunk plus small vectors, about ``(vocab * hidden + chunk_size * vocab) * 4``
bytes, against ``3 * tokens * vocab * 4`` for the naive path (logits, log-softmax and their gradient alive
together).  Half inputs add a float32 copy of each chunk and of the weight gradient.  Time: the backward pass
recomputes the logits, one extra ``tokens x hidden x vocab`` matmul (4 instead of 3); on the 2-core CPU that
costs about what the naive path spends passing over its three [tokens, vocab] tensors (benchmarks/).

``recompute=False`` (Liger-Kernel's choice): when a gradient is needed, each chunk's gradients are computed in
the forward pass, right after its loss, and the backward pass only multiplies them by the incoming gradient:
3 matmuls and, with the default chunk, the same peak (the scaled weight gradient replaces the chunk); but the
gradient work is done in forward even if backward never runs, and the unscaled gradients stay alive from
forward to backward.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import (
    check_count,
    check_float,
    check_ignore_index,
    check_in_range,
    check_integer,
    check_rank,
    shape_str,
)
from .causal_lm import next_token_labels

__all__ = ["chunked_cross_entropy"]

_HALF = (torch.float16, torch.bfloat16)


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    ignore_index: int = -100,
    num_items_in_batch: int | torch.Tensor | None = None,
    shift: bool = False,
    recompute: bool = True,
) -> torch.Tensor:
    """Cross-entropy of the logits ``hidden @ weight.T + bias``, ``chunk_size`` tokens at a time.

    ``hidden`` Float[batch, seq, hidden] (any leading dims), ``weight`` Float[vocab, hidden],
    ``bias`` Float[vocab] or None, ``labels`` Long[batch, seq]: the targets (``shift=False``) or
    the unshifted ids, shifted per sequence before chunking (``shift=True``, as ``causal_lm_loss``).

        loss = sum_t [logsumexp(z_t) - z_t[y_t]] / D,   z_t = W h_t + b,   y_t != ignore_index

    D = ``num_items_in_batch``, else the kept targets: one denominator for every chunk.  The
    largest temporary is one [chunk, vocab] block; ``chunk_size`` defaults to ``hidden``'s last
    dim (a chunk as large as the weight gradient).  ``recompute=False``: gradients in forward
    (Liger-Kernel's choice).  Peers: Liger-Kernel ``LigerFusedLinearCrossEntropyLoss``, Cut
    Cross-Entropy (Wijmans et al. 2024); precision, memory, time: chapter 11's table.
    """
    chunk_size, ignore_index = _check_inputs(hidden, weight, labels, bias, chunk_size, ignore_index,
                                             num_items_in_batch)
    if shift:
        labels = next_token_labels(labels, ignore_index)  # [batch, seq]: before chunking
    targets = labels.reshape(-1).to(device=hidden.device, dtype=torch.long)  # [tokens]
    flat = hidden.reshape(-1, hidden.shape[-1])  # [tokens, hidden]
    acc = torch.float32 if hidden.dtype in _HALF else hidden.dtype
    if num_items_in_batch is None:
        denominator = (targets != ignore_index).sum().to(acc)  # []: on the device, no sync
    elif torch.is_tensor(num_items_in_batch):
        denominator = num_items_in_batch.reshape(()).to(device=hidden.device, dtype=acc)  # []
    else:  # a fill on the device: no host-to-device copy
        denominator = torch.full((), num_items_in_batch, dtype=acc, device=hidden.device)  # []
    return _ChunkedCrossEntropy.apply(flat, weight, bias, targets, denominator, chunk_size,
                                      ignore_index, bool(recompute))


def _check_inputs(hidden, weight, labels, bias, chunk_size, ignore_index, num_items_in_batch):
    """chunked_cross_entropy's checks; returns ``(chunk_size, ignore_index)`` (the default chunk filled in)."""
    check_float("hidden", hidden)
    check_float("weight", weight)
    if hidden.dim() < 2:
        raise ValueError(f"hidden must be [batch, seq, hidden] or [tokens, hidden], got shape {shape_str(hidden)}")
    check_rank("weight", weight, (2,), "[vocab, hidden] (the output projection's weight)")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be [vocab, hidden] with hidden={hidden.shape[-1]} (the last dim of hidden "
                         f"{shape_str(hidden)}), got {shape_str(weight)}")
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise TypeError(f"hidden and weight must share dtype and device, got hidden {hidden.dtype} on "
                        f"{hidden.device} and weight {weight.dtype} on {weight.device}")
    vocab = weight.shape[0]
    if bias is not None:
        check_float("bias", bias)
        if bias.shape != (vocab,):
            raise ValueError(f"bias must have shape [{vocab}] (one per row of weight {shape_str(weight)}), "
                             f"got {shape_str(bias)}")
        if bias.dtype != hidden.dtype or bias.device != hidden.device:
            raise TypeError(f"bias must have hidden's dtype and device ({hidden.dtype} on {hidden.device}), got "
                            f"{bias.dtype} on {bias.device}")
    if chunk_size is None:  # [chunk, vocab] as large as the [vocab, hidden] weight gradient, which must exist anyway
        chunk_size = hidden.shape[-1]
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (tokens per chunk), got {chunk_size!r}")
    ignore_index = check_ignore_index(ignore_index)
    check_integer("labels", labels, "token ids")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels must have shape {list(hidden.shape[:-1])} (hidden {shape_str(hidden)} without the "
                         f"last dim: one token id or ignore_index per position), got {shape_str(labels)}")
    # the value check, once per call: the call's one host-device synchronisation on an accelerator
    check_in_range("labels", labels, vocab, ignore_index, "token id")
    if num_items_in_batch is not None:
        check_count("num_items_in_batch", num_items_in_batch)
    return int(chunk_size), ignore_index


def _chunk_buffer(flat, weight, acc, chunk_size):
    """One ``[chunk, vocab]`` buffer that every chunk's logits reuse, or None for half inputs (their logits are
    computed in the input dtype and then converted).  A tensor this size (131 MB at chunk 256, V=128256) is
    mapped fresh from the operating system at every allocation and its pages faulted in one by one; allocating
    it once per pass instead of once per chunk took chunked_cross_entropy from 1.21x to 1.00x the naive path's
    time at 2048 tokens, H=256, V=128256 on the 2-core CPU (best of 3 rounds each; benchmarks/)."""
    if flat.dtype != acc:
        return None
    return torch.empty(min(chunk_size, flat.shape[0]), weight.shape[0], dtype=acc, device=flat.device)


def _chunk_logits(h, weight, bias, acc, buffer=None):
    """``[chunk, vocab]`` logits of one chunk in the accumulation dtype (float32 for half inputs), written into
    ``buffer``'s first rows when one is given."""
    if buffer is not None:
        out = buffer[: h.shape[0]]  # [chunk, vocab], contiguous
        return torch.mm(h, weight.T, out=out) if bias is None else torch.addmm(bias, h, weight.T, out=out)
    z = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)  # [chunk, vocab], the input dtype
    return z if z.dtype == acc else z.to(acc)


def _logsumexp_(z):
    """``torch.logsumexp(z, dim=-1)`` for [chunk, vocab] ``z``, the same operations in the same order (so the same
    bits), but overwriting ``z`` with exp(z - max) instead of allocating a second [chunk, vocab] tensor."""
    m = z.amax(dim=-1, keepdim=True)  # [chunk, 1]
    m.masked_fill_(m.abs() == math.inf, 0)  # as PyTorch: an all -inf row gives -inf, a +inf row +inf
    return z.sub_(m).exp_().sum(dim=-1).log_().add_(m.squeeze(-1))  # [chunk]


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Forward: per chunk, the logits z [chunk, vocab], then lse(z) - z[y]; lse [tokens] is kept.
    Backward: per chunk, z again, and d loss / d z = (softmax(z) - onehot(y)) / D on kept rows
    (``chunk_grads``), multiplied into the gradients of hidden, weight and bias."""

    @staticmethod
    def forward(ctx, flat, weight, bias, targets, denominator, chunk_size, ignore_index, recompute):
        acc = denominator.dtype
        tokens = flat.shape[0]
        lse = torch.empty(tokens, dtype=acc, device=flat.device)  # [tokens]: saved for backward
        total = torch.zeros((), dtype=acc, device=flat.device)
        early = not recompute and any(ctx.needs_input_grad[:3])  # gradients now, scaled in backward
        grads = _new_grads(flat, weight, acc, ctx.needs_input_grad[:3]) if early else None
        scale = 1 / denominator
        buffer = None if early else _chunk_buffer(flat, weight, acc, chunk_size)  # early: z whole
        for start in range(0, tokens, chunk_size):
            stop = min(start + chunk_size, tokens)
            z = _chunk_logits(flat[start:stop], weight, bias, acc, buffer)  # [chunk, vocab]
            y = targets[start:stop]  # [chunk]
            kept = y != ignore_index  # [chunk]
            picked = z.gather(1, torch.where(kept, y, 0).unsqueeze(1)).squeeze(1)  # z_t[y_t]
            chunk_lse = torch.logsumexp(z, dim=-1) if early else _logsumexp_(z)  # z is spent
            total += torch.where(kept, chunk_lse - picked, 0).sum()
            lse[start:stop] = chunk_lse
            if early:
                _ChunkedCrossEntropy.chunk_grads(z, chunk_lse, flat, weight, y, kept, scale, start,
                                                 stop, grads)
            del z
        del buffer
        if early:
            ctx.grads = grads
            ctx.save_for_backward(denominator)
        else:
            ctx.grads = None
            ctx.save_for_backward(flat, weight, bias, targets, lse, denominator)
        ctx.chunk_size, ctx.ignore_index = chunk_size, ignore_index
        return total / denominator  # []

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.grads is not None:  # computed in forward for an incoming gradient of 1: scale them
            return _finish_grads(ctx.grads, grad_out) + (None,) * 5
        flat, weight, bias, targets, lse, denominator = ctx.saved_tensors
        acc = denominator.dtype
        grads = _new_grads(flat, weight, acc, ctx.needs_input_grad[:3])
        scale = grad_out.to(acc) / denominator  # []: d loss / d (summed loss)
        buffer = _chunk_buffer(flat, weight, acc, ctx.chunk_size)
        for start in range(0, flat.shape[0], ctx.chunk_size):
            stop = min(start + ctx.chunk_size, flat.shape[0])
            y = targets[start:stop]
            kept = y != ctx.ignore_index
            z = _chunk_logits(flat[start:stop], weight, bias, acc, buffer)  # recomputed, [chunk, V]
            _ChunkedCrossEntropy.chunk_grads(z, lse[start:stop], flat, weight, y, kept, scale,
                                             start, stop, grads)
            del z
        return _finish_grads(grads, None) + (None,) * 5

    @staticmethod
    def chunk_grads(g, chunk_lse, flat, weight, y, kept, scale, start, stop, grads):
        """One chunk's backward: its logits ``g`` [chunk, vocab] become (softmax - onehot) * scale
        in place (0 on ignored rows); then grad_h[chunk] = g W, grad_W += g^T h, grad_b += sum g."""
        grad_h, grad_w, grad_b, _ = grads
        acc = g.dtype
        g.sub_(chunk_lse.unsqueeze(1)).exp_()  # softmax, in place
        rows = torch.arange(stop - start, device=g.device)
        g[rows, torch.where(kept, y, 0)] -= kept.to(acc)  # softmax - onehot on kept rows
        g.mul_(torch.where(kept, scale, 0).unsqueeze(1))  # ignored rows: exactly 0 (also D = 0)
        g_in = g.to(flat.dtype)  # [chunk, vocab]: the gradient of the input-dtype logits
        h = flat[start:stop]
        if grad_h is not None:
            torch.mm(g_in, weight, out=grad_h[start:stop])
        if grad_w is not None:
            if acc == flat.dtype:
                grad_w.addmm_(g_in.T, h)
            else:
                grad_w.add_(g_in.T @ h)  # the half product into the float32 sum, no float32 copy
        if grad_b is not None:
            grad_b += g_in.sum(0, dtype=acc)


def _new_grads(flat, weight, acc, needs):
    need_h, need_w, need_b = needs
    return (torch.empty(flat.shape, dtype=flat.dtype, device=flat.device) if need_h else None,
            torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None,
            torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if need_b else None,
            weight.dtype)


def _finish_grads(grads, grad_out):
    grad_h, grad_w, grad_b, dtype = grads
    if grad_out is not None:  # early gradients: times d(outer)/d(loss), out of place (backward may run again)
        grad_h, grad_w, grad_b = (None if t is None else t * grad_out.to(t.dtype) for t in (grad_h, grad_w, grad_b))
    grad_w = None if grad_w is None else grad_w.to(dtype)
    grad_b = None if grad_b is None else grad_b.to(dtype)
    return grad_h, grad_w, grad_b
