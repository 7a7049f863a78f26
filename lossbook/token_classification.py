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
    named_label_errors,
    shape_str,
)
from .cross_entropy import per_position_cross_entropy

__all__ = ["token_classification_loss"]


def token_classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_labels: int, **kwargs
) -> torch.Tensor:
    """Mean cross-entropy over the tokens whose label is not ``ignore_index`` (NER, tagging).

    ``logits``: Float[Tensor, "batch seq classes"], ``classes == num_labels`` (any leading dims).
    ``labels``: Long[Tensor, "batch seq"], a tag in ``[0, num_labels)``, or ``ignore_index``
    (default -100) at sub-word continuations, special tokens and padding.  ``kwargs``
    (``num_items_in_batch``, ``ignore_index``, ...) go to :func:`lossbook.fixed_cross_entropy`.

    loss = sum over kept tokens t of [logsumexp(z_t) - z_t[y_t]] / D, D = the kept count or
    ``num_items_in_batch``; every label ignored and no count gives 0/0 = NaN, as upstream.

    Upstream: transformers ``loss.loss_utils.ForTokenClassification``.  What differs
    (``num_labels`` and the labels' shape checked, float64 kept): chapter 05's table.
    """
    ignore_index = check_token_classification(logits, labels, num_labels, kwargs)
    with named_label_errors("labels", labels, num_labels, ignore_index, "tag"):
        return per_position_cross_entropy(logits, labels, **kwargs)  # []


def check_token_classification(logits, labels, num_labels, kwargs) -> int:
    """:func:`token_classification_loss`'s inputs, each checked with an error naming it and its shape;
    returns ``ignore_index`` (from ``kwargs``, default -100)."""
    check_float("logits", logits)
    if logits.dim() == 0:
        raise ValueError(f"logits must be [batch, seq, classes] (or any [..., classes]), got shape {shape_str(logits)}")
    if not isinstance(num_labels, numbers.Integral) or isinstance(num_labels, bool) or num_labels < 1:
        raise TypeError(f"num_labels must be a positive int (config.num_labels), got {num_labels!r}")
    if logits.shape[-1] != num_labels:
        raise ValueError(
            f"logits must end in num_labels={num_labels} classes, got shape {shape_str(logits)}; "
            f"logits.view(-1, {num_labels}) would regroup the numbers of different tokens"
        )
    ignore_index = check_ignore_index(kwargs.get("ignore_index", -100))
    check_position_labels("labels", labels, logits, ignore_index, what="tag")
    return ignore_index
