"""The causal language-model loss: next-token cross-entropy with the label shift done by the loss.

Chapter: notebooks/02_causal_lm.ipynb.  Upstream: transformers
``transformers.loss.loss_utils.ForCausalLMLoss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import (
    check_float,
    check_ignore_index,
    check_in_range,
    check_integer,
    check_position_labels,
    check_vocab_size,
    named_label_errors,
    shape_str,
)
from .cross_entropy import per_position_cross_entropy

__all__ = ["causal_lm_loss", "check_causal_lm", "next_token_labels"]


def next_token_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The target of every position: ``labels`` moved one step left, ``ignore_index`` at the end.

    ``labels``: Long[Tensor, "... seq"] -> Long[Tensor, "... seq"], the same shape, so that
    position t of the logits is scored against token t + 1, and the last position, which has no
    next token, against nothing.  Shift a sequence **once, in full**: a sequence cut into shards
    (context parallelism) is shifted before it is cut, then each shard passes its piece as
    ``causal_lm_loss(..., shift_labels=piece)``.
    """
    check_integer("labels", labels, "token ids")
    if labels.dim() == 0:
        raise ValueError("labels must have a sequence dimension (shape [..., seq]), "
                         "got a 0-dim tensor")
    ignore_index = check_ignore_index(ignore_index)
    if labels.shape[-1] == 0:  # nothing to shift (and a crop of an empty dim is an error)
        return labels.long()
    # one operation: crop the first position, pad one ignore_index on the right
    # (upstream pads, slices and copies: the same tensor in three operations)
    return F.pad(labels.long(), (-1, 1), value=ignore_index)  # [..., seq], contiguous


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    vocab_size: int | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Next-token cross-entropy of a causal LM: position t of the logits predicts token t + 1.

    ``logits``: Float[Tensor, "batch seq vocab"] (any leading dims).
    ``labels``: Long[Tensor, "batch seq"], the *unshifted* token ids (``input_ids``, padding and
    prompt set to ``ignore_index``); or ``shift_labels``, targets already aligned with the logits
    (then ``labels`` is not used and may be None).

    loss = sum_t [logsumexp(z_t) - z_t[y_{t+1}]] / D over the kept targets, D =
    ``num_items_in_batch`` or the kept count.  The last position has no target; every target
    ignored and no count gives 0/0 = NaN, as upstream.

    Upstream: transformers ``loss.loss_utils.ForCausalLMLoss``.  What differs (checked shapes and
    ``vocab_size``, float64 kept, one cropping pad for the shift): chapter 02's table.
    """
    check_causal_lm(logits, labels, vocab_size, ignore_index, shift_labels)
    vocab = logits.shape[-1]
    if shift_labels is None:  # shift once, in full: position t is scored against token t + 1
        errors = named_label_errors("labels", labels, vocab, ignore_index, "token id")
        shift_labels = next_token_labels(labels, ignore_index)  # [batch, seq]
    else:
        errors = named_label_errors("shift_labels", shift_labels, vocab, ignore_index, "token id")
    with errors:  # a bad token id is named as the caller passed it
        return per_position_cross_entropy(
            logits, shift_labels, num_items_in_batch, ignore_index, **kwargs
        )


def check_causal_lm(logits, labels, vocab_size, ignore_index, shift_labels) -> None:
    """:func:`causal_lm_loss`'s inputs, each checked with an error naming it and its shape."""
    check_float("logits", logits)
    if logits.dim() < 2:
        raise ValueError(f"logits must be [batch, seq, vocab] (or [seq, vocab]), got shape {shape_str(logits)}")
    check_vocab_size(vocab_size, logits)
    if shift_labels is not None:
        check_position_labels("shift_labels", shift_labels, logits, ignore_index)
        return
    if labels is None:
        raise TypeError("causal_lm_loss needs labels (unshifted) or shift_labels (already shifted), got neither")
    check_position_labels("labels", labels, logits, ignore_index)
    if labels.is_cpu and labels.numel():  # the loss never reads labels[..., 0]: check it here
        _check_first_labels("labels", labels, logits.shape[-1], check_ignore_index(ignore_index))


def _check_first_labels(name: str, labels: torch.Tensor, vocab: int, ignore_index: int) -> None:
    """``labels[..., 0]`` (CPU, non-empty) in ``[0, vocab)`` or ``ignore_index``: one value per sequence, read
    into Python through a ``select`` view (no copy); anything but [batch, seq] labels, and any bad value, goes
    to ``check_in_range`` for the verdict and the message."""
    first = labels.select(-1, 0)  # [...]: a view
    if first.dim() == 1:  # the usual [batch, seq] labels: one value per sequence, scanned in Python
        if not [v for v in first.tolist() if v != ignore_index and not 0 <= v < vocab]:
            return
    check_in_range(name, first, vocab, ignore_index, "token id", shape_of=labels)
