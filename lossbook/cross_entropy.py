"""Cross-entropy with ``ignore_index`` and ``num_items_in_batch``.

Chapter: notebooks/01_cross_entropy.ipynb.  Upstream: transformers
``transformers.loss.loss_utils.fixed_cross_entropy``.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from ._checks import check_float, check_in_range, check_integer, check_rank, shape_str

__all__ = ["fixed_cross_entropy", "per_position_cross_entropy"]

# keywords forwarded to torch.nn.functional.cross_entropy; transformers drops them silently
_FORWARDED = ("label_smoothing", "weight")
# keywords that would contradict num_items_in_batch's choice of reduction
_REFUSED = ("reduction", "reduce", "size_average")


def fixed_cross_entropy(
    source: torch.Tensor,
    target: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    ignore_index: int = -100,
    **kwargs,
) -> torch.Tensor:
    """Mean cross-entropy over the items whose target is not ``ignore_index``.

    ``source``: Float[Tensor, "items classes"] (or "classes" for one item), logits.
    ``target``: Long[Tensor, "items"] (or a 0-dim tensor), class indices.

    loss = sum_i [logsumexp(z_i) - z_i[y_i]] / D over kept items i, where
    D = ``num_items_in_batch`` when given (sum-then-divide: the shared
    denominator that makes gradient accumulation exact), else the number of
    kept items (``reduction="mean"``).  Same values and gradients as
    transformers' ``fixed_cross_entropy``.

    Documented edge cases:

    * every target ignored and no ``num_items_in_batch``: the mean over zero
      items is 0/0 = NaN, exactly as in PyTorch and transformers.  Pass
      ``num_items_in_batch`` (the count over the whole accumulated batch) and
      such a micro-batch contributes 0.
    * a tensor ``num_items_in_batch`` equal to 0 divides by zero, as upstream;
      an ``int`` must be positive.

    Differences from upstream, each a clear error or a stated choice:

    * ``label_smoothing`` and ``weight`` are forwarded to
      ``torch.nn.functional.cross_entropy`` (transformers swallows them in
      ``**kwargs``); ``reduction`` is refused, since ``num_items_in_batch``
      decides it.  Other keywords are ignored, as upstream, because models
      forward their own keyword arguments to the loss.
    * shapes are checked (no silent broadcasting), targets must be integer
      indices in ``[0, classes)`` or ``ignore_index``, and a logits tensor of
      rank 3 is refused: flatten ``[batch, seq, vocab]`` to
      ``[batch*seq, vocab]`` first, as the task losses of chapters 02-06 do.
    """
    check_float("source", source)
    check_integer("target", target)
    check_rank("source", source, (1, 2), "[items, classes] or [classes]")
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    expected = source.shape[:1] if source.dim() == 2 else torch.Size([])
    if target.shape != expected:
        raise ValueError(
            f"target must have shape {list(expected)} to match source {shape_str(source)} "
            f"(one class index per row of logits), got {shape_str(target)}"
        )
    classes = source.shape[-1]
    ignore_index = int(ignore_index)
    check_in_range("target", target, classes, ignore_index)
    extra = _forwarded_kwargs(kwargs)
    target = target.to(device=source.device, dtype=torch.long)

    if num_items_in_batch is None:
        return F.cross_entropy(source, target, ignore_index=ignore_index, reduction="mean", **extra)  # []
    denominator = _check_num_items(num_items_in_batch)
    loss = F.cross_entropy(source, target, ignore_index=ignore_index, reduction="sum", **extra)  # []
    if torch.is_tensor(denominator):
        denominator = denominator.to(loss.device)
    return loss / denominator


def _forwarded_kwargs(kwargs: dict) -> dict:
    refused = [k for k in _REFUSED if k in kwargs]
    if refused:
        raise TypeError(
            f"fixed_cross_entropy got {refused[0]}=...: the reduction is set by num_items_in_batch "
            "(None -> mean over kept items, a count -> sum / count)"
        )
    return {k: kwargs[k] for k in _FORWARDED if k in kwargs and kwargs[k] is not None}


def _check_num_items(n):
    if torch.is_tensor(n):
        if n.numel() != 1:
            raise ValueError(
                f"num_items_in_batch must be a single count, got a tensor of shape {shape_str(n)}; "
                "a vector would silently broadcast the loss"
            )
        return n
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise TypeError(f"num_items_in_batch must be an int or a one-element tensor, got {type(n).__name__}")
    if n <= 0:
        raise ValueError(f"num_items_in_batch must be positive, got {n}")
    return n


def per_position_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    ignore_index: int = -100,
    **kwargs,
) -> torch.Tensor:
    """The shared tail of the token-level task losses (causal LM, masked LM, token classification).

    ``logits``: Float[Tensor, "... classes"]; ``labels``: Long[Tensor, "..."], already aligned and checked by
    the caller.  Half precision is upcast to float32 as transformers does (float64 is kept, so ``gradcheck``
    runs); both are flattened with ``reshape`` (a view for contiguous logits; upstream's ``view`` raises on
    non-contiguous ones) and scored by :func:`fixed_cross_entropy`.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # upcast: the softmax needs float32's mantissa
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [items, classes]
    flat_labels = labels.reshape(-1).to(flat_logits.device)  # [items]
    return fixed_cross_entropy(flat_logits, flat_labels, num_items_in_batch, ignore_index, **kwargs)  # []
