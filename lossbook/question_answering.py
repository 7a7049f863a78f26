"""Extractive question answering: cross-entropy over the start and the end of the answer span.

Chapter: notebooks/06_question_answering.ipynb.  Upstream: transformers
``transformers.loss.loss_utils.ForQuestionAnsweringLoss`` (the loss of every ``*ForQuestionAnswering``
head, e.g. ``BertForQuestionAnswering``; Devlin et al. 2019, section 4.2).
"""

from __future__ import annotations

import torch

from ._checks import check_float, check_integer, check_tensor, plain_cpu, shape_str
from .cross_entropy import _score, plain_score

__all__ = ["question_answering_loss"]


def question_answering_loss(start_logits, end_logits, start_positions, end_positions, **kwargs):
    """Mean of the start-token and end-token cross-entropies; positions outside the window are ignored.

    ``start_logits``, ``end_logits``: Float[Tensor, "batch seq"], one score per token for "the answer
    starts here" and "the answer ends here".
    ``start_positions``, ``end_positions``: Long[Tensor, "batch"] or Long[Tensor, "batch 1"], the gold
    token indices (a trailing dimension of 1 is squeezed, as upstream).

    With L = seq (the window length)::

        s = clamp(start_positions, 0, L),  e = clamp(end_positions, 0, L)
        loss = ( CE(start_logits, s; ignore_index=L) + CE(end_logits, e; ignore_index=L) ) / 2

    where CE is ``fixed_cross_entropy``: the mean over the kept rows, or the sum divided by
    ``num_items_in_batch`` when that keyword comes through ``**kwargs``.  Each head is averaged over
    its *own* kept rows, so an example whose start is in the window but whose end is not counts in
    the first mean only.  The gradient with respect to one row of ``start_logits`` is
    ``(softmax(z) - onehot(s)) / (2 * kept_starts)`` (zero for an ignored row); the same for the end.

    The clamp rule, exactly as upstream, and what it means:

    * a position >= L (an answer cut off by truncation) becomes L, the ignore index: the row does
      not count;
    * a negative position becomes 0 and **does** count, as "the answer starts at token 0" (the
      ``[CLS]`` token, which SQuAD-v2 style models use for "no answer").  Mark an unanswerable
      example with a position >= L, never with -1 or -100, if it must not be scored.

    The clamp is a safety net, not the recipe: Hugging Face's question-answering preprocessing labels a
    window that does not hold the whole answer with the ``[CLS]`` index (0) for start and end, so the
    model is trained to say "no answer here" (``demos.question_answering.window_labels``; chapter 06
    trains both and shows what ignoring such windows costs).

    Edge cases (as upstream, except where stated):

    * ``start_positions`` or ``end_positions`` is None: returns None (a model called without labels).
    * every start (or every end) position out of the window and no ``num_items_in_batch``: that
      head's mean is 0/0 = NaN, so the loss is NaN (its gradient is zero).  With
      ``num_items_in_batch`` such a head contributes 0.
    * no upcast of the logits: the result has their dtype (bfloat16 logits give a bfloat16 loss); each
      head's mean is reduced in float32 (``fixed_cross_entropy``), so realistic float16 batches give a
      finite loss where upstream's float16 sum overflows to ``inf``, and agree with upstream to two units
      in the last place elsewhere.

    Differences from upstream, each a clear error or a stated choice:

    * ``start_logits`` and ``end_logits`` must have the same shape ``[batch, seq]``: upstream takes L
      from the start logits only, so an end head of another length is scored against the wrong
      ignore index.  Rank 1 or 3 logits are refused with a message (upstream fails deep in PyTorch).
    * positions must be integer tensors of shape ``[batch]`` or ``[batch, 1]`` with the logits'
      batch size; float and bool positions are refused (upstream takes a bool mask as positions
      0/1 silently), int32 positions are accepted (upstream raises inside PyTorch).
    * ``ignore_index`` is refused: it is always L here.  ``label_smoothing`` and ``weight`` are
      forwarded to the cross-entropy, as in ``fixed_cross_entropy`` (upstream drops them); other
      keywords are ignored, as upstream.
    """
    if start_positions is None or end_positions is None:
        return None
    if "ignore_index" in kwargs:
        raise TypeError(
            "question_answering_loss got ignore_index=...: the ignored index is always the sequence length "
            "(positions at or past the end of the window are ignored)"
        )
    if (plain_cpu(start_logits, start_positions, 0, None, kwargs)
            and plain_cpu(end_logits, end_positions, 0, None, {}) and start_logits.dim() == 2
            and end_logits.shape == start_logits.shape and start_positions.dim() == 1 and end_positions.dim() == 1
            and start_positions.shape[0] == end_positions.shape[0] == start_logits.shape[0]):
        # the common call (see lossbook._checks.plain_cpu): the same checks and loss in fewer steps
        seq = start_logits.shape[1]  # the ignored index, one past the last token
        start_loss = plain_score(start_logits, start_positions.clamp(0, seq), None, seq,
                                 ("start_logits", "start_positions"), "token position")  # []
        end_loss = plain_score(end_logits, end_positions.clamp(0, seq), None, seq,
                               ("end_logits", "end_positions"), "token position")  # []
        return (start_loss + end_loss) / 2  # []
    start_logits, end_logits = _check_logits(start_logits, end_logits)
    batch, seq = start_logits.shape
    start_positions = _check_positions("start_positions", start_positions, batch)  # [batch]
    end_positions = _check_positions("end_positions", end_positions, batch)  # [batch]

    ignored_index = seq  # one past the last token
    start_positions = start_positions.clamp(0, ignored_index)  # [batch], in [0, seq]
    end_positions = end_positions.clamp(0, ignored_index)  # [batch], in [0, seq]

    num_items = kwargs.pop("num_items_in_batch", None)
    # shapes, dtypes and values are checked (clamped) above, so the two losses go straight to the scoring
    start_loss = _score(start_logits, start_positions, num_items, ignored_index, kwargs, "start_logits",
                        "start_positions", False, "token position", None)  # []
    end_loss = _score(end_logits, end_positions, num_items, ignored_index, kwargs, "end_logits",
                      "end_positions", False, "token position", None)  # []
    return (start_loss + end_loss) / 2  # []


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
