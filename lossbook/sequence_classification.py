"""Sequence classification: regression (MSE), single-label (CE) and multi-label (BCE with logits).

Chapter: notebooks/04_sequence_classification.ipynb.  Upstream: transformers
``transformers.loss.loss_utils.ForSequenceClassificationLoss``, which reads ``num_labels`` and
``problem_type`` from the model's config; here they are arguments, and nothing is mutated.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from ._checks import check_float, check_integer, check_tensor, named_label_errors, shape_str
from .cross_entropy import fixed_cross_entropy

__all__ = ["PROBLEM_TYPES", "PROBLEM_LOSSES", "infer_problem_type", "sequence_classification_loss",
           "check_sequence_classification", "regression_loss", "single_label_loss", "multi_label_loss",
           "last_token_positions", "last_token_pool"]

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# the label dtypes transformers reads as class indices; every other dtype (float, but also int8, int16,
# uint8, bool) makes it infer multi_label_classification when num_labels > 1
_INDEX_DTYPES = (torch.long, torch.int)


def infer_problem_type(num_labels: int, labels: torch.Tensor) -> str:
    """The problem type transformers infers when the config leaves it ``None``.

    ``num_labels == 1`` -> ``"regression"``; ``num_labels > 1`` and labels of dtype ``torch.long``
    or ``torch.int`` -> ``"single_label_classification"``; anything else ->
    ``"multi_label_classification"``.  Only the labels' dtype is looked at, never their shape or
    values: float class indices, one-hot rows and int8 indices all infer multi-label (chapter 04
    shows what each then does).
    """
    num_labels = _check_num_labels(num_labels)
    check_tensor("labels", labels)
    if num_labels == 1:
        return "regression"
    if labels.dtype in _INDEX_DTYPES:
        return "single_label_classification"
    return "multi_label_classification"


def sequence_classification_loss(
    labels: torch.Tensor,
    pooled_logits: torch.Tensor,
    num_labels: int,
    problem_type: str | None = None,
    **kwargs,
) -> torch.Tensor:
    """The loss of a sequence-classification head: three problem types, one function each.

    ``pooled_logits``: Float[Tensor, "batch classes"], one row per sequence, ``classes ==
    num_labels``.  ``labels``: float targets (``"regression"``); Long[Tensor, "batch"] class
    indices or ``ignore_index`` (``"single_label_classification"``); float multi-hot rows in
    [0, 1] (``"multi_label_classification"``).  ``problem_type=None``: :func:`infer_problem_type`,
    from ``num_labels`` and the labels' dtype only.  The three losses: :func:`regression_loss`,
    :func:`single_label_loss`, :func:`multi_label_loss` (``PROBLEM_LOSSES``).

    Upstream: transformers ``loss.loss_utils.ForSequenceClassificationLoss``, same values,
    gradients and dtypes.  What differs (shapes that would broadcast refused, label dtypes and
    ranges checked, the config never written to): chapter 04's table.
    """
    problem_type = check_sequence_classification(labels, pooled_logits, num_labels, problem_type)
    labels = labels.to(pooled_logits.device)
    return PROBLEM_LOSSES[problem_type](labels, pooled_logits, int(num_labels), **kwargs)


def regression_loss(labels, pooled_logits, num_labels, **kwargs):
    """Mean squared error, mean_i (z_i - y_i)^2 (``kwargs`` ignored, as upstream).

    With one label both tensors are squeezed, as upstream, so [batch, 1] logits go with [batch]
    or [batch, 1] labels.
    """
    if num_labels == 1:
        return F.mse_loss(pooled_logits.squeeze(), labels.squeeze())
    return F.mse_loss(pooled_logits, labels)


def single_label_loss(labels, pooled_logits, num_labels, **kwargs):
    """Chapter 01's cross-entropy over the rows, one class index per row.

    ``num_items_in_batch``, ``ignore_index``, ``label_smoothing`` and ``weight`` act through
    ``kwargs``.
    """
    with named_label_errors("labels", labels, num_labels, kwargs.get("ignore_index", -100)):
        return fixed_cross_entropy(
            pooled_logits.reshape(-1, num_labels), labels.reshape(-1), **kwargs
        )


def multi_label_loss(labels, pooled_logits, num_labels, **kwargs):
    """Binary cross-entropy of every (row, class) entry, averaged over batch x classes.

    -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]; ``kwargs`` ignored, as upstream.
    """
    return F.binary_cross_entropy_with_logits(pooled_logits, labels)


#: problem type -> its loss, as ``sequence_classification_loss`` dispatches
PROBLEM_LOSSES = {
    "regression": regression_loss,
    "single_label_classification": single_label_loss,
    "multi_label_classification": multi_label_loss,
}


def check_sequence_classification(labels, pooled_logits, num_labels, problem_type) -> str:
    """:func:`sequence_classification_loss`'s inputs, each checked with an error naming it and its shape;
    returns the problem type (inferred when ``None``)."""
    check_float("pooled_logits", pooled_logits)
    check_tensor("labels", labels)
    num_labels = _check_num_labels(num_labels)
    if problem_type is None:
        problem_type = infer_problem_type(num_labels, labels)
    elif problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {', '.join(map(repr, PROBLEM_TYPES))} or None, "
                         f"got {problem_type!r}")
    if problem_type == "regression":
        _check_regression(labels, pooled_logits, num_labels)
    elif problem_type == "single_label_classification":
        _check_single_label(labels, pooled_logits, num_labels)
    else:
        _check_multi_label(labels, pooled_logits, num_labels)
    return problem_type


def _check_regression(labels, pooled_logits, num_labels) -> None:
    if labels.is_complex():
        raise TypeError(f"regression labels must be real numbers, got dtype {labels.dtype}")
    if num_labels == 1:
        _check_last_dim(pooled_logits, num_labels, allow_squeezed=True)
        z, y = pooled_logits.squeeze(), labels.squeeze()  # [batch] each ([] for batch 1)
        if z.shape != y.shape:
            raise ValueError(
                f"regression with num_labels=1: pooled_logits {shape_str(pooled_logits)} and labels "
                f"{shape_str(labels)} squeeze to {shape_str(z)} and {shape_str(y)}, which would broadcast "
                "(MSELoss only warns); give one label per logit"
            )
        return
    _check_last_dim(pooled_logits, num_labels)
    _check_same_shape(pooled_logits, labels, "regression")


def _check_single_label(labels, pooled_logits, num_labels) -> None:
    check_integer("labels", labels)
    _check_last_dim(pooled_logits, num_labels)
    rows = pooled_logits.shape[:-1]  # [batch]
    if _squeezed(labels.shape) != _squeezed(rows):
        raise ValueError(
            f"single-label labels must hold one class index per row of pooled_logits "
            f"{shape_str(pooled_logits)}, i.e. have shape {list(rows)} (or {list(rows) + [1]}), "
            f"got {shape_str(labels)}"
        )


def _check_multi_label(labels, pooled_logits, num_labels) -> None:
    if not labels.is_floating_point():
        raise TypeError(
            f"multi-label labels must be floating-point multi-hot rows of shape {shape_str(pooled_logits)}, "
            f"got dtype {labels.dtype} with shape {shape_str(labels)}. With num_labels > 1 only torch.long "
            "and torch.int labels are read as class indices; use labels.long() for single-label classes, "
            "or labels.float() for multi-hot targets"
        )
    _check_last_dim(pooled_logits, num_labels)
    if labels.shape != pooled_logits.shape and _squeezed(labels.shape) == _squeezed(pooled_logits.shape[:-1]):
        raise ValueError(  # one label per row: class indices stored as floats, read as multi-label
            f"multi-label labels must have the shape of pooled_logits {shape_str(pooled_logits)}, got "
            f"{shape_str(labels)}: one {labels.dtype} label per row. If these are class indices, the float "
            "dtype made the problem type infer as multi-label; use labels.long() for single-label classes"
        )
    _check_same_shape(pooled_logits, labels, "multi-label")
    if bool(((labels < 0) | (labels > 1)).any()):  # one device sync
        raise ValueError(
            f"multi-label labels must lie in [0, 1] (multi-hot or soft targets), got values in "
            f"[{labels.min().item():g}, {labels.max().item():g}] with shape {shape_str(labels)}; "
            "binary cross-entropy does not ignore -100 padding, it rewards it without bound"
        )


def _check_num_labels(num_labels) -> int:
    if isinstance(num_labels, bool) or not isinstance(num_labels, numbers.Integral):
        raise TypeError(f"num_labels must be an int, got {type(num_labels).__name__}")
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    return int(num_labels)


def _check_last_dim(logits: torch.Tensor, num_labels: int, allow_squeezed: bool = False) -> None:
    if allow_squeezed and logits.dim() <= 1:  # [batch] or [] logits, already squeezed
        return
    if logits.dim() == 0 or logits.shape[-1] != num_labels:
        raise ValueError(
            f"pooled_logits must be [batch, num_labels] = [batch, {num_labels}], got {shape_str(logits)}; "
            "a last dimension other than num_labels means the head and num_labels disagree"
        )


def _check_same_shape(logits: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if labels.shape != logits.shape:
        raise ValueError(
            f"{what} labels must have the shape of pooled_logits {shape_str(logits)}, got {shape_str(labels)} "
            "(the two would broadcast to a wrong mean instead of pairing up)"
        )


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def last_token_positions(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Long[Tensor, "batch"]: the position of each row's last token that is not ``pad_token_id``.

    ``input_ids``: Long[Tensor, "batch seq"].  The rightmost non-pad position, so right padding
    (``[a, b, c, pad, pad]`` -> 2) and left padding (``[pad, pad, a, b, c]`` -> 4) both work: the rule of
    transformers' ``GenericForSequenceClassification.forward`` (``modeling_layers.py``), used by the
    decoder-only classifiers (Llama, Mistral, Qwen2, ...), which pool the logits of that one position.

    Differences from upstream, each a clear error: a row made only of padding is refused (upstream's
    ``argmax`` of an all-zero row silently picks position 0, a pad token); a float ``input_ids`` is refused.
    Beware a tokenizer whose pad token is also its end-of-sequence token: a real EOS at the end of a row
    counts as padding here, as upstream, so the row is pooled at the token before it.
    """
    input_ids = check_integer("input_ids", input_ids, "token ids")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {shape_str(input_ids)}")
    real = input_ids != pad_token_id  # [batch, seq]
    empty = ~real.any(dim=-1)  # [batch]
    if empty.any():
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"input_ids rows {rows} (shape {shape_str(input_ids)}) hold only pad_token_id="
                         f"{pad_token_id}: there is no last token to pool (transformers would pool position 0)")
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device)  # [seq]
    return (positions * real).argmax(dim=-1)  # [batch]: the largest position holding a real token


def last_token_pool(logits: torch.Tensor, input_ids: torch.Tensor,
                    pad_token_id: int) -> torch.Tensor:
    """Float[Tensor, "batch num_labels"]: ``logits`` [batch, seq, num_labels] at
    :func:`last_token_positions`.

    What a decoder-only sequence classifier feeds to :func:`sequence_classification_loss` as
    ``pooled_logits`` (transformers' ``GenericForSequenceClassification``).  The classic bug is
    ``logits[:, -1]``: on a right-padded batch it pools, for every row shorter than the batch, the
    output at a pad token instead of the output at the row's last token, which is what the model is
    trained to read.
    """
    logits = check_tensor("logits", logits)
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(f"logits must be [batch, seq, num_labels] with [batch, seq] = input_ids' "
                         f"shape {shape_str(input_ids)}, got {shape_str(logits)}")
    last = last_token_positions(input_ids, pad_token_id).to(logits.device)  # [batch]
    rows = torch.arange(logits.shape[0], device=logits.device)  # [batch]
    return logits[rows, last]  # [batch, num_labels]
