"""Token classification: one cross-entropy per token, averaged over the tokens that carry a label.

Chapter: notebooks/05_token_classification.ipynb.  Upstream: transformers
``transformers.loss.loss_utils.ForTokenClassification``.
"""

from __future__ import annotations

import numbers

import torch

from ._checks import (
    check_float,
    check_ignore_index,
    check_position_labels,
    plain_cpu,
    shape_str,
    torch_checks_values,
)
from .cross_entropy import per_position_cross_entropy, plain_score

__all__ = ["token_classification_loss"]


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int, **kwargs) -> torch.Tensor:
    """Mean cross-entropy over the tokens whose label is not ``ignore_index`` (NER, POS tagging, chunking).

    ``logits``: Float[Tensor, "batch seq classes"] with ``classes == num_labels``
    (any leading shape is accepted: ``[batch, classes]`` or ``[classes]`` too).
    ``labels``: Long[Tensor, "batch seq"], exactly ``logits.shape[:-1]``; a tag
    index in ``[0, num_labels)`` or ``ignore_index`` (default -100) for the
    positions that must not count: sub-word continuations, special tokens,
    padding.
    ``kwargs``: ``num_items_in_batch`` and ``ignore_index`` as in
    :func:`lossbook.fixed_cross_entropy`, which receives them all.

    loss = sum over kept tokens t of [logsumexp(z_t) - z_t[y_t]] / D, where
    D is the number of kept tokens in this batch, or ``num_items_in_batch``
    when given (the count over every micro-batch of an accumulated step).
    dloss/dz_t = (softmax(z_t) - onehot(y_t)) / D for a kept token and exactly
    0 for an ignored one with finite logits (a NaN or -inf logit at an ignored
    token gives a NaN gradient row there, as upstream; the loss stays finite).

    As transformers: logits flattened to ``[batch*seq, classes]``, labels to
    ``[batch*seq]`` and moved to the logits' device, half-precision logits
    (float16, bfloat16) upcast to float32, so the result is float32.  Same
    values and gradients as upstream on every input both accept.

    Documented edge cases, as upstream:

    * every label ignored and no ``num_items_in_batch``: 0/0 = NaN (gradient
      zero); with ``num_items_in_batch`` such a batch contributes 0.
    * an empty batch (``batch == 0``) is every label ignored.

    Differences from upstream, each a clear error or a stated choice:

    * ``logits.shape[-1] != num_labels`` is refused.  Upstream's
      ``logits.view(-1, num_labels)`` silently regroups the numbers whenever
      ``num_labels`` divides ``logits.numel()`` (e.g. 6 logits per token read
      as two tokens of 3), and fails with a bare view error otherwise.
    * ``labels.shape != logits.shape[:-1]`` is refused (upstream flattens any
      labels with the right number of elements, so ``[seq, batch]`` labels are
      silently misaligned; reshape deliberately if flat labels are what you have).
    * float64 logits stay float64 (upstream's ``.float()`` also *down*casts
      them to float32); the upcast exists for precision, so lossbook never
      lowers it.  Values then agree with upstream to float32 rounding.
    * non-contiguous logits are reshaped (upstream's ``.view`` raises).
    * ``label_smoothing`` and ``weight`` are honoured and ``reduction`` refused,
      as in :func:`lossbook.fixed_cross_entropy` (upstream ignores them).
    """
    if (type(num_labels) is int and num_labels > 0 and plain_cpu(logits, labels, -100, None, kwargs)
            and labels.dim() >= 1
            and labels.shape == logits.shape[:-1] and logits.shape[-1] == num_labels):
        # the common call (see lossbook._checks.plain_cpu): the same checks and loss in fewer steps
        return plain_score(logits.reshape(-1, num_labels), labels.reshape(-1), None, -100, ("logits", "labels"),
                           "tag", labels)  # []
    check_float("logits", logits)
    if logits.dim() == 0:
        raise ValueError(f"logits must be [batch, seq, classes] (or any [..., classes]), got shape {shape_str(logits)}")
    if not isinstance(num_labels, numbers.Integral) or isinstance(num_labels, bool) or num_labels < 1:
        raise TypeError(f"num_labels must be a positive int (config.num_labels), got {num_labels!r}")
    num_labels = int(num_labels)
    if logits.shape[-1] != num_labels:
        raise ValueError(
            f"logits must end in num_labels={num_labels} classes, got shape {shape_str(logits)}; "
            f"logits.view(-1, {num_labels}) would regroup the numbers of different tokens"
        )
    ignore_index = check_ignore_index(kwargs.pop("ignore_index", -100))
    deferred = torch_checks_values(logits, labels)  # on the CPU the loss's own kernel checks the values
    check_position_labels("labels", labels, logits, ignore_index, what="tag", values=not deferred)
    return per_position_cross_entropy(logits, labels, ignore_index=ignore_index, labels_checked=not deferred,
                                      what="tag", shapes_checked=True, **kwargs)  # []
