"""Cross-entropy with ``ignore_index`` and ``num_items_in_batch``.

Chapter: notebooks/01_cross_entropy.ipynb.  Upstream: transformers
``transformers.loss.loss_utils.fixed_cross_entropy``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import (
    check_count,
    check_float,
    check_ignore_index,
    check_integer,
    check_label_values,
    check_position_labels,
    check_rank,
    check_tensor,
    named_label_errors,
    shape_str,
)

__all__ = [
    "cross_entropy_from_scratch", "fixed_cross_entropy", "check_cross_entropy", "per_position_cross_entropy",
]

# keywords forwarded to torch.nn.functional.cross_entropy; transformers drops them silently
_FORWARDED = ("label_smoothing", "weight")
# keywords that would contradict num_items_in_batch's choice of reduction
_REFUSED = ("reduction", "reduce", "size_average")


def cross_entropy_from_scratch(
    source: torch.Tensor,
    target: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Cross-entropy in four lines: the arithmetic :func:`fixed_cross_entropy` leaves to PyTorch.

    ``source``: Float[Tensor, "items classes"] logits; ``target``: Long[Tensor, "items"] class
    indices or ``ignore_index``.  loss = sum over kept items i of [logsumexp(z_i) - z_i[y_i]] / D,
    D = the kept count or ``num_items_in_batch``.  For teaching (chapter 01): no input checks
    beyond the shapes, float32/64 only.
    """
    check_float("source", source)
    check_integer("target", target)
    check_rank("source", source, (2,), "[items, classes]")
    if target.shape != source.shape[:1]:
        raise ValueError(f"target must have shape [{source.shape[0]}] to match source "
                         f"{shape_str(source)}, got {shape_str(target)}")
    kept = target != ignore_index  # [items]
    # [items, classes]: log-softmax by log-sum-exp, never log(softmax)
    log_p = source - torch.logsumexp(source, dim=-1, keepdim=True)
    picked = log_p.gather(-1, torch.where(kept, target, 0).unsqueeze(-1)).squeeze(-1)  # [items]
    total = -(picked * kept).sum()  # []: ignored items contribute 0 (and a zero gradient)
    return total / (kept.sum() if num_items_in_batch is None else num_items_in_batch)  # []


def fixed_cross_entropy(
    source: torch.Tensor,
    target: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    ignore_index: int = -100,
    **kwargs,
) -> torch.Tensor:
    """Mean cross-entropy over the items whose target is not ``ignore_index``.

    ``source``: Float[Tensor, "items classes"] (or "classes": one item), logits.
    ``target``: Long[Tensor, "items"] (or 0-dim), class indices or ``ignore_index``.

    loss = sum over kept items i of [logsumexp(z_i) - z_i[y_i]] / D, where D is
    ``num_items_in_batch`` when given (sum, then divide: gradient accumulation's shared
    denominator), else the number of kept items (every target ignored: 0/0 = NaN, as upstream).

    Upstream: transformers ``loss.loss_utils.fixed_cross_entropy``, same values and gradients.
    What differs (checked inputs, ``label_smoothing`` and ``weight`` forwarded, half precision
    summed in float32): chapter 01's table "lossbook and upstream".
    """
    target, ignore_index, extra = check_cross_entropy(
        source, target, num_items_in_batch, ignore_index, kwargs
    )
    if source.dtype in (torch.float16, torch.bfloat16):  # a half-precision sum overflows
        return _half_cross_entropy(source, target, num_items_in_batch, ignore_index, extra)
    reduction = "sum" if num_items_in_batch is not None else "mean"
    with named_label_errors("target", target, source.shape[-1], ignore_index):
        loss = F.cross_entropy(
            source, target, ignore_index=ignore_index, reduction=reduction, **extra
        )
    if reduction == "sum":
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


def check_cross_entropy(source, target, num_items_in_batch, ignore_index, kwargs):
    """:func:`fixed_cross_entropy`'s inputs, each checked with an error that names it and its shape.

    Returns the target as ``torch.long`` on the logits' device, ``ignore_index`` as an ``int`` and the
    keywords forwarded to ``F.cross_entropy`` (``label_smoothing``, ``weight``).  The label values are
    checked before the loss on an accelerator (one synchronisation) and by PyTorch's kernel on the CPU
    (:func:`lossbook._checks.named_label_errors`).
    """
    check_float("source", source)
    check_integer("target", target)
    check_rank("source", source, (1, 2), "[items, classes] or [classes]")
    ignore_index = check_ignore_index(ignore_index)
    expected = source.shape[:1] if source.dim() == 2 else torch.Size([])
    if target.shape != expected:
        raise ValueError(
            f"target must have shape {list(expected)} to match source {shape_str(source)} "
            f"(one class index per row of logits), got {shape_str(target)}"
        )
    extra = forwarded_kwargs(kwargs, source) if kwargs else {}
    if "weight" in extra and num_items_in_batch is not None:
        raise ValueError(
            "weight and num_items_in_batch cannot be combined: a class-weighted mean divides by the summed "
            "weights of the kept targets, num_items_in_batch counts them, so accumulated micro-batches "
            "would not equal the full batch's weighted mean; sum the reduction='none' losses and divide by "
            "the whole batch's total weight instead"
        )
    if num_items_in_batch is not None:
        check_count("num_items_in_batch", num_items_in_batch)
    if target.dtype is not torch.long or target.device != source.device:
        target = target.to(device=source.device, dtype=torch.long)
    check_label_values("target", target, source.shape[-1], ignore_index)  # on an accelerator only
    return target, ignore_index, extra


def _half_cross_entropy(source, target, denominator, ignore_index, extra):
    """Half-precision logits: per-item losses as PyTorch computes them, the reduction in float32.

    A float16 sum of a few thousand realistic per-item losses overflows (65504 is float16's largest value),
    so upstream's ``reduction="sum"`` (and ``"mean"``, which sums first) returns ``inf`` although the mean is
    representable.  Here the sum and the division run in float32 and the mean is rounded once to the dtype
    of upstream's ``loss / num_items_in_batch`` (the input dtype, promoted by a floating tensor count), so it
    is finite whenever the mean is, and within one unit in the last place of upstream's value wherever
    upstream's is finite (tests/test_cross_entropy.py).
    """
    dtype = source.dtype
    with named_label_errors("target", target, source.shape[-1], ignore_index):
        per_item = F.cross_entropy(source, target, ignore_index=ignore_index, reduction="none", **extra)
    total = per_item.float().sum()  # []: float32 accumulation
    if denominator is None:  # the mean over kept items; with a class weight, over their summed weights
        kept = target != ignore_index  # [items]
        weight = extra.get("weight")
        if weight is None:
            denominator = kept.sum()
        else:
            denominator = weight.float()[torch.where(kept, target, 0)].masked_fill(~kept, 0).sum()
    elif torch.is_tensor(denominator):
        dtype = torch.promote_types(dtype, denominator.dtype)  # as upstream's half loss / a tensor count
        denominator = denominator.to(total.device)
    return (total / denominator).to(dtype)  # []


def forwarded_kwargs(kwargs: dict, source: torch.Tensor, source_name: str = "source") -> dict:
    """The keywords :func:`fixed_cross_entropy` forwards to ``F.cross_entropy`` (``label_smoothing``,
    ``weight``: a floating [classes] tensor, moved to the logits' device and dtype); ``reduction`` refused."""
    refused = [k for k in _REFUSED if k in kwargs]
    if refused:
        raise TypeError(
            f"fixed_cross_entropy got {refused[0]}=...: the reduction is set by num_items_in_batch "
            "(None -> mean over kept items, a count -> sum / count)"
        )
    extra = {k: kwargs[k] for k in _FORWARDED if k in kwargs and kwargs[k] is not None}
    if "weight" in extra:
        extra["weight"] = _check_weight(extra["weight"], source, source_name)
    return extra


def _check_weight(weight, source: torch.Tensor, source_name: str) -> torch.Tensor:
    """A per-class weight: a floating tensor of shape [classes], moved to the logits' device and dtype."""
    check_tensor("weight", weight)
    classes = source.shape[-1]
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor of shape [{classes}] (one weight per class), got "
                        f"dtype {weight.dtype}")
    if weight.shape != (classes,):
        raise ValueError(f"weight must have shape [{classes}] (one weight per class of {source_name} "
                         f"{shape_str(source)}), got {shape_str(weight)}")
    return weight.to(device=source.device, dtype=source.dtype)


def per_position_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    ignore_index: int = -100,
    **kwargs,
) -> torch.Tensor:
    """The tail of the token-level losses (chapters 02, 03, 05): flatten, then chapter 01's loss.

    ``logits``: Float[Tensor, "... classes"]; ``labels``: Long[Tensor, "..."], one label per
    position, already aligned (shifted, for a causal LM).

    As the tail of transformers' ``ForCausalLMLoss`` and ``ForMaskedLMLoss``: half precision
    upcast to float32 (float64 is kept, for gradcheck), logits flattened to [items, classes] and
    labels to [items] on the logits' device, then :func:`fixed_cross_entropy`.  ``reshape``, not
    upstream's ``view``, so non-contiguous logits work.
    """
    check_position_labels("labels", labels, logits, ignore_index, "class index")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # upcast: the softmax needs float32's mantissa
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [items, classes]
    flat_labels = labels.reshape(-1).to(flat_logits.device)  # [items]
    with named_label_errors("labels", labels, logits.shape[-1], ignore_index):
        return fixed_cross_entropy(
            flat_logits, flat_labels, num_items_in_batch, ignore_index, **kwargs
        )  # []
