"""Extractive question answering: cross-entropy over the start and the end of the answer span.

Chapter: notebooks/06_question_answering.ipynb.  Upstream: transformers
``transformers.loss.loss_utils.ForQuestionAnsweringLoss`` (the loss of every ``*ForQuestionAnswering``
head, e.g. ``BertForQuestionAnswering``; Devlin et al. 2019, section 4.2).
"""

from __future__ import annotations

import torch

from ._checks import check_float, check_integer, check_tensor, shape_str
from .cross_entropy import fixed_cross_entropy, forwarded_kwargs

__all__ = ["question_answering_loss", "check_question_answering"]


def question_answering_loss(start_logits, end_logits, start_positions, end_positions, **kwargs):
    """Mean of the start and end cross-entropies; positions outside the window are ignored.

    ``start_logits``, ``end_logits``: Float[Tensor, "batch seq"], a score per token for "the
    answer starts (ends) here".  ``start_positions``, ``end_positions``: Long[Tensor, "batch"]
    (or "batch 1"), the gold tokens.  With L = seq, s = clamp(start, 0, L), e = clamp(end, 0, L):

        loss = (CE(start_logits, s; ignore_index=L) + CE(end_logits, e; ignore_index=L)) / 2

    CE is :func:`lossbook.fixed_cross_entropy` (``num_items_in_batch`` comes through ``kwargs``).
    A position >= L (an answer cut off by the window) is not scored; a negative one becomes 0, the
    ``[CLS]`` token ("no answer"), and is.  Each head is averaged over its own kept rows.

    Upstream: transformers ``loss.loss_utils.ForQuestionAnsweringLoss``; what differs: chapter
    06's table.
    """
    if start_positions is None or end_positions is None:
        return None  # a model called without labels
    start_positions, end_positions = check_question_answering(
        start_logits, end_logits, start_positions, end_positions, kwargs)  # [batch] each
    ignored_index = start_logits.size(1)  # one past the last token
    start_positions = start_positions.clamp(0, ignored_index)
    end_positions = end_positions.clamp(0, ignored_index)
    start_loss = fixed_cross_entropy(
        start_logits, start_positions, ignore_index=ignored_index, **kwargs
    )
    end_loss = fixed_cross_entropy(end_logits, end_positions, ignore_index=ignored_index, **kwargs)
    return (start_loss + end_loss) / 2


def check_question_answering(start_logits, end_logits, start_positions, end_positions, kwargs):
    """:func:`question_answering_loss`'s inputs, each checked with an error naming it and its shape; returns
    the positions as Long[Tensor, "batch"] (a trailing dimension of 1 squeezed, as upstream)."""
    if "ignore_index" in kwargs:
        raise TypeError(
            "question_answering_loss got ignore_index=...: the ignored index is always the sequence length "
            "(positions at or past the end of the window are ignored)"
        )
    start_logits, end_logits = _check_logits(start_logits, end_logits)
    forwarded_kwargs(kwargs, start_logits, "start_logits")  # label_smoothing, weight: one per token
    batch = start_logits.shape[0]
    return (_check_positions("start_positions", start_positions, batch),
            _check_positions("end_positions", end_positions, batch))


def _check_logits(start_logits, end_logits) -> tuple[torch.Tensor, torch.Tensor]:
    check_float("start_logits", start_logits)
    check_float("end_logits", end_logits)
    if start_logits.dim() != 2:
        raise ValueError(
            f"start_logits must be [batch, seq] (one score per token), got shape {shape_str(start_logits)}"
            + ("; squeeze the trailing 1 of the QA head's output first" if start_logits.dim() == 3 else "")
        )
    if end_logits.shape != start_logits.shape:
        raise ValueError(
            f"end_logits must have the shape of start_logits {shape_str(start_logits)}, got {shape_str(end_logits)}; "
            "both heads score the same tokens"
        )
    return start_logits, end_logits


def _check_positions(name: str, positions, batch: int) -> torch.Tensor:
    check_tensor(name, positions)
    check_integer(name, positions, what="token positions")
    original = positions
    if positions.dim() == 2 and positions.shape[-1] == 1:
        positions = positions.squeeze(-1)  # [batch, 1] -> [batch], as upstream
    if positions.dim() != 1 or positions.shape[0] != batch:
        raise ValueError(
            f"{name} must have shape [{batch}] or [{batch}, 1] (one token index per example, batch {batch} as "
            f"in the logits), got {shape_str(original)}"
        )
    return positions.to(torch.long)
