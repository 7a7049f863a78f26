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
    check_in_range,
    check_integer,
    check_rank,
    check_tensor,
    plain_cpu,
    shape_str,
    torch_checks_values,
)

__all__ = ["cross_entropy_from_scratch", "fixed_cross_entropy", "per_position_cross_entropy"]

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
    """Cross-entropy in four lines, the arithmetic :func:`fixed_cross_entropy` leaves to PyTorch.

    ``source``: Float[Tensor, "items classes"] logits; ``target``: Long[Tensor, "items"] class indices or
    ``ignore_index``.  loss = sum over kept items i of [logsumexp(z_i) - z_i[y_i]] / D, D = the kept count or
    ``num_items_in_batch``.  For teaching (chapter 01): no input checks beyond the shapes, float32/64 only.
    """
    check_float("source", source)
    check_integer("target", target)
    check_rank("source", source, (2,), "[items, classes]")
    if target.shape != source.shape[:1]:
        raise ValueError(f"target must have shape [{source.shape[0]}] to match source {shape_str(source)}, "
                         f"got {shape_str(target)}")
    kept = target != ignore_index  # [items]
    log_p = source - torch.logsumexp(source, dim=-1, keepdim=True)  # [items, classes]: never log(softmax)
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
    * an ignored row contributes nothing to the loss, and its gradient is
      exactly 0 as long as its logits are finite; a NaN or ``-inf`` logit in
      an ignored row leaves the loss finite but makes that row's gradient NaN
      (as in PyTorch and transformers: the softmax of the row is computed
      before the row is dropped).
    * half-precision logits (float16, bfloat16): the per-item losses are
      PyTorch's, but they are summed and divided in float32 and the mean is
      rounded once, to upstream's dtype: the input dtype, promoted by a
      floating tensor ``num_items_in_batch`` as upstream's division is
      (float32 for a float32 count).  Upstream's float16 sum overflows to
      ``inf`` on realistic batches (a few thousand items with losses near 10);
      lossbook returns the finite mean, and equals upstream to one unit in the
      last place wherever upstream is finite.

    Differences from upstream, each a clear error or a stated choice:

    * ``label_smoothing`` and ``weight`` are forwarded to
      ``torch.nn.functional.cross_entropy`` (transformers swallows them in
      ``**kwargs``); ``weight`` must be a floating ``[classes]`` tensor and is
      moved to the logits' device and dtype; ``reduction`` is refused, since
      ``num_items_in_batch`` decides it.
    * ``weight`` together with ``num_items_in_batch`` is refused (ValueError): with a class weight the
      mean divides by the summed weights of the kept targets, sum_i w[y_i] l_i / sum_i w[y_i], but
      ``num_items_in_batch`` counts items, so accumulated micro-batches would give sum_i w[y_i] l_i / N,
      which is neither the full batch's weighted mean nor a fixed multiple of it.  Upstream drops
      ``weight`` silently.  For weighted accumulation, sum the ``reduction="none"`` losses and divide by the
      total weight of the whole batch yourself.  Other keywords are ignored, as
      upstream, because models forward their own keyword arguments to the loss.
    * ``num_items_in_batch`` must be a positive, finite count (an int, a float
      or a one-element tensor): NaN, infinite, zero, negative and boolean
      counts are errors (upstream divides by them).  A tensor on an
      accelerator is checked from its metadata only, so that the check never
      makes the host wait for the device; its value is not inspected.
    * shapes are checked (no silent broadcasting), targets must be integer
      indices in ``[0, classes)`` or ``ignore_index``, and a logits tensor of
      rank 3 is refused: flatten ``[batch, seq, vocab]`` to
      ``[batch*seq, vocab]`` first, as the task losses of chapters 02-06 do.
      The label values are checked once per call: on the CPU by PyTorch's
      own kernel during the loss (no extra tensor operation; lossbook re-reads
      the labels for a clear message only when that kernel raises), on an
      accelerator before the loss, reading the labels' minimum and maximum
      together (one synchronisation).  tests/test_overhead.py pins both.
    """
    if (plain_cpu(source, target, ignore_index, num_items_in_batch, kwargs) and source.dim() == 2
            and target.dim() == 1 and target.shape[0] == source.shape[0]):
        return plain_score(source, target, num_items_in_batch, ignore_index, ("source", "target"), "class index")
    return _cross_entropy(source, target, num_items_in_batch, ignore_index, kwargs)


def plain_score(source, target, num_items_in_batch, ignore_index, names, what, shown=None):
    """The loss of a call :func:`lossbook._checks.plain_cpu` accepted, whose shapes the caller has checked
    (``source`` [items, classes], ``target`` [items]): PyTorch's kernel checks the label values, and if it raises,
    lossbook re-reads them for the clear message (``names``: the caller's argument names; ``what``: one label;
    ``shown``: the tensor whose shape the message shows)."""
    try:
        return _reduce(source, target, num_items_in_batch, ignore_index, {})  # []
    except IndexError:  # PyTorch's "Target 7 is out of bounds."
        _explain(names[1], target, source.shape[-1], ignore_index, what, shown)
        raise


def _explain(name, target, classes, ignore_index, what, shown) -> None:
    """Called while PyTorch's ``IndexError`` for an out-of-range target is handled: re-read the labels and raise
    lossbook's clear ``ValueError`` (the argument, the value, the shape) without PyTorch's terse message chained to
    it; return if they hold no bad value (the caller then re-raises PyTorch's error)."""
    try:
        check_in_range(name, target, classes, ignore_index, what, shape_of=shown)
    except ValueError as clear:
        raise clear from None


def _cross_entropy(source, target, num_items_in_batch, ignore_index, kwargs, names=("source", "target"),
                   labels_checked=False, what="class index", shown=None):
    """``fixed_cross_entropy`` with the caller's argument names in its errors (``names``: logits, labels).

    ``labels_checked=True``: the caller has already range-checked ``target`` (or made it valid, e.g. by
    clamping), so the value check, the one host-device synchronisation of a call, is not repeated.
    Otherwise the values are checked once: before the loss on an accelerator; on the CPU by PyTorch's own
    kernel during the loss, and re-checked by lossbook for a clear message only if it raises
    (:func:`lossbook._checks.torch_checks_values`).  ``what``: the name of one label in messages; ``shown``: the
    tensor whose shape messages show (the caller's labels, before flattening).
    """
    source_name, target_name = names
    check_float(source_name, source)
    check_integer(target_name, target)
    check_rank(source_name, source, (1, 2), "[items, classes] or [classes]")
    ignore_index = check_ignore_index(ignore_index)
    expected = source.shape[:1] if source.dim() == 2 else torch.Size([])
    if target.shape != expected:
        raise ValueError(
            f"{target_name} must have shape {list(expected)} to match {source_name} {shape_str(source)} "
            f"(one class index per row of logits), got {shape_str(target)}"
        )
    deferred = not labels_checked and torch_checks_values(source, target)  # PyTorch's CPU kernel checks them
    if not labels_checked and not deferred:
        check_in_range(target_name, target, source.shape[-1], ignore_index, what)  # one sync on an accelerator
    return _score(source, target, num_items_in_batch, ignore_index, kwargs, source_name, target_name, deferred,
                  what, shown)


def _score(source, target, num_items_in_batch, ignore_index, kwargs, source_name, target_name, deferred, what,
           shown):
    """The loss of checked inputs (``source`` [items, classes] or [classes] floating, ``target`` integer of the
    matching shape, ``ignore_index`` an int).  ``deferred``: the label values are not checked yet, PyTorch's CPU
    kernel checks them during the loss and, if it raises, lossbook re-checks them for a clear message."""
    extra = _forwarded_kwargs(kwargs, source, source_name) if kwargs else kwargs
    if "weight" in extra and num_items_in_batch is not None:
        raise ValueError(
            "weight and num_items_in_batch cannot be combined: a class-weighted mean divides by the summed "
            "weights of the kept targets, num_items_in_batch counts them, so accumulated micro-batches "
            "would not equal the full batch's weighted mean; sum the reduction='none' losses and divide by "
            "the whole batch's total weight instead"
        )
    denominator = None if num_items_in_batch is None else check_count("num_items_in_batch", num_items_in_batch)
    if target.dtype is not torch.long or target.device != source.device:
        target = target.to(device=source.device, dtype=torch.long)
    try:
        return _reduce(source, target, denominator, ignore_index, extra)  # []
    except IndexError:  # PyTorch's "Target 7 is out of bounds."
        if deferred:
            _explain(target_name, target, source.shape[-1], ignore_index, what, shown)
        raise


def _reduce(source, target, denominator, ignore_index, extra):
    if source.dtype in (torch.float16, torch.bfloat16):
        return _half_cross_entropy(source, target, denominator, ignore_index, extra)  # []
    if denominator is None:
        return F.cross_entropy(source, target, ignore_index=ignore_index, reduction="mean", **extra)  # []
    loss = F.cross_entropy(source, target, ignore_index=ignore_index, reduction="sum", **extra)  # []
    if torch.is_tensor(denominator):
        denominator = denominator.to(loss.device)
    return loss / denominator


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
    per_item = F.cross_entropy(source, target, ignore_index=ignore_index, reduction="none", **extra)  # [items]
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


def _forwarded_kwargs(kwargs: dict, source: torch.Tensor, source_name: str) -> dict:
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
    names: tuple[str, str] = ("logits", "labels"),
    labels_checked: bool = False,
    what: str = "token id",
    shapes_checked: bool = False,
    **kwargs,
) -> torch.Tensor:
    """The shared tail of the token-level task losses (causal LM, masked LM, token classification).

    ``logits``: Float[Tensor, "... classes"]; ``labels``: Long[Tensor, "..."], already aligned and checked by
    the caller.  Half precision is upcast to float32 as transformers does (float64 is kept, so ``gradcheck``
    runs); both are flattened with ``reshape`` (a view for contiguous logits; upstream's ``view`` raises on
    non-contiguous ones) and scored by :func:`fixed_cross_entropy`; errors name the caller's arguments
    (``names``).  ``labels_checked=True``: the caller has range-checked the labels (with
    ``check_position_labels``), so the check is not run twice; otherwise it runs here once (on the CPU by
    PyTorch's kernel, see ``_cross_entropy``), naming a label a ``what``.  ``shapes_checked=True``: the caller
    has checked the dtypes, the shapes (``labels.shape == logits.shape[:-1]``) and ``ignore_index`` (an int),
    so they are not checked again.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # upcast: the softmax needs float32's mantissa
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [items, classes]
    flat_labels = labels.reshape(-1)  # [items]
    if not shapes_checked:
        return _cross_entropy(flat_logits, flat_labels.to(flat_logits.device), num_items_in_batch, ignore_index,
                              kwargs, names, labels_checked, what, shown=labels)  # []
    deferred = not labels_checked and torch_checks_values(flat_logits, flat_labels)
    if not labels_checked and not deferred:
        check_in_range(names[1], flat_labels, flat_logits.shape[-1], ignore_index, what, shape_of=labels)
    return _score(flat_logits, flat_labels, num_items_in_batch, ignore_index, kwargs, names[0], names[1], deferred,
                  what, labels)  # []
