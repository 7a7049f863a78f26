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
    plain_cpu,
    shape_str,
    torch_checks_values,
)
from .cross_entropy import per_position_cross_entropy, plain_score

__all__ = ["causal_lm_loss", "next_token_labels"]


def next_token_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The target of every position: ``labels`` moved one step left, ``ignore_index`` at the end.

    ``labels``: Long[Tensor, "... seq"] -> Long[Tensor, "... seq"], same shape, so that position t of the
    logits is scored against token t + 1 and the last position, which has no next token, against nothing.
    Shift a sequence **once, in full**: a sequence cut into shards (context parallelism) must be shifted
    before it is cut, then each shard passes its piece as ``causal_lm_loss(..., shift_labels=piece)``.
    """
    check_integer("labels", labels, "token ids")
    if labels.dim() == 0:
        raise ValueError("labels must have a sequence dimension (shape [..., seq]), got a 0-dim tensor")
    ignore_index = check_ignore_index(ignore_index)
    if labels.shape[-1] == 0:  # nothing to shift (and a crop of an empty dim is an error)
        return labels.long()
    # one operation: crop the first position, pad one ignore_index on the right (upstream pads, slices and
    # copies: the same tensor in three operations)
    return F.pad(labels.long(), (-1, 1), value=ignore_index)  # [..., seq], contiguous


def _check_first_labels(name: str, labels: torch.Tensor, vocab: int, ignore_index: int) -> None:
    """``labels[..., 0]`` (CPU, non-empty) in ``[0, vocab)`` or ``ignore_index``: one value per sequence, read
    into Python through a ``select`` view (no copy); anything but [batch, seq] labels, and any bad value, goes
    to ``check_in_range`` for the verdict and the message."""
    first = labels.select(-1, 0)  # [...]: a view
    if first.dim() == 1:  # the usual [batch, seq] labels: one value per sequence, scanned in Python
        if not [v for v in first.tolist() if v != ignore_index and not 0 <= v < vocab]:
            return
    check_in_range(name, first, vocab, ignore_index, "token id", shape_of=labels)


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    vocab_size: int | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Next-token cross-entropy of a causal LM: position t of the logits predicts token t + 1 of the labels.

    ``logits``: Float[Tensor, "batch seq vocab"] (any leading dims, e.g. "seq vocab" for one sequence).
    ``labels``: Long[Tensor, "batch seq"], the *unshifted* token ids (usually ``input_ids`` with padding
    and prompt positions set to ``ignore_index``); the loss shifts them itself.
    ``shift_labels``: Long[Tensor, "batch seq"], targets already aligned with the logits; when given,
    ``labels`` is not used (it may be ``None``), as upstream.

    loss = sum_t [logsumexp(z_t) - z_t[y_{t+1}]] / D over the kept targets, with D = ``num_items_in_batch``
    when given (sum-then-divide, for gradient accumulation and sharding) and else the number of kept targets.
    The labels are shifted by one ``F.pad(labels, (-1, 1), value=ignore_index)`` (crop the first, pad one
    ``ignore_index`` on the right); the logits are not sliced, so nothing of size batch x seq x vocab is copied
    (beyond the float32 upcast below).

    Edge cases (as upstream): the last position of every sequence has no target; a sequence of length 1,
    or a batch whose targets are all ``ignore_index``, gives NaN (0/0, with a zero gradient) unless
    ``num_items_in_batch`` is given, in which case it contributes 0.  A position without a target has a zero
    gradient row when its logits are finite; a NaN or -inf logit there gives a finite loss and a NaN gradient
    row (the softmax is computed before the row is dropped).

    Differences from transformers ``ForCausalLMLoss``, each a clear error or a stated choice:

    * ``vocab_size`` defaults to ``logits.shape[-1]``; one that disagrees with it is an error naming both.
      Upstream's ``logits.view(-1, vocab_size)`` regroups the numbers into rows of the wrong length, then
      fails on a batch-size mismatch, or, when the counts happen to line up, silently scores wrong rows.
    * ``labels`` (or ``shift_labels``) must have exactly the shape ``logits.shape[:-1]``; upstream accepts
      e.g. flattened ``[batch*seq]`` labels and then shifts across the boundary between sequences.
    * half and single precision are computed in float32 as upstream; float64 logits stay float64
      (upstream's ``.float()`` would round them to float32), so ``gradcheck`` can run on this function.
    * labels of any integer dtype are accepted (upstream refuses int32); every label must be a token id in
      ``[0, vocab)`` or ``ignore_index``, the first one too (upstream never reads ``labels[..., 0]``).
    * non-contiguous logits are flattened with ``reshape`` (upstream's ``view`` raises).
    * ``label_smoothing`` and ``weight`` reach the cross-entropy (upstream swallows them); ``reduction``
      is refused; other keyword arguments are ignored, as upstream.
    """
    if (shift_labels is None and plain_cpu(logits, labels, ignore_index, num_items_in_batch, kwargs)
            and labels.dim() >= 1 and labels.shape == logits.shape[:-1] and labels.shape[-1]
            and (vocab_size is None or (type(vocab_size) is int and vocab_size == logits.shape[-1]))):
        # the common call (see lossbook._checks.plain_cpu): the same checks and loss in fewer steps
        vocab = logits.shape[-1]
        _check_first_labels("labels", labels, vocab, ignore_index)  # the loss never reads labels[..., 0]
        shifted = F.pad(labels, (-1, 1), value=ignore_index)  # [batch, seq], as next_token_labels
        return plain_score(logits.reshape(-1, vocab), shifted.view(-1), num_items_in_batch, ignore_index,
                           ("logits", "labels"), "token id", labels)  # []
    check_float("logits", logits)
    if logits.dim() < 2:
        raise ValueError(f"logits must be [batch, seq, vocab] (or [seq, vocab]), got shape {shape_str(logits)}")
    check_vocab_size(vocab_size, logits)
    ignore_index = check_ignore_index(ignore_index)
    if shift_labels is None:
        if labels is None:
            raise TypeError("causal_lm_loss needs labels (unshifted) or shift_labels (already shifted), got neither")
        name = "labels"
        deferred = torch_checks_values(logits, labels)  # on the CPU the loss's own kernel checks the values
        check_position_labels(name, labels, logits, ignore_index, values=not deferred)
        if deferred and labels.numel():  # the loss scores labels[..., 1:]: the first label of each sequence
            _check_first_labels(name, labels, logits.shape[-1], ignore_index)  # is checked here
        shift_labels = next_token_labels(labels, ignore_index)  # [batch, seq]
    else:
        name = "shift_labels"
        deferred = torch_checks_values(logits, shift_labels)
        check_position_labels(name, shift_labels, logits, ignore_index, values=not deferred)
    return per_position_cross_entropy(logits, shift_labels, num_items_in_batch, ignore_index, ("logits", name),
                                      labels_checked=not deferred, shapes_checked=True, **kwargs)  # []
