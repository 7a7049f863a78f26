"""Chapter 04's bug zoo: plausible, wrong sequence-classification losses, each failing the check.

Each exhibit has the signature of ``sequence_classification_loss`` and gets one problem type wrong (the
other two it hands to lossbook), so ``checks.compare_losses`` against lossbook on
``demos.sequence_classification.sequence_classification_cases`` fails.  Never use them.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..sequence_classification import infer_problem_type, sequence_classification_loss

__all__ = ["broadcasting_mse", "bce_of_probabilities", "softmax_across_labels", "onehot_float_labels"]


def broadcasting_mse(labels, pooled_logits, num_labels, problem_type=None, **kwargs):
    """BUG: regression without the squeeze: ``[batch, 1]`` logits against ``[batch]`` labels
    broadcast to a ``[batch, batch]`` matrix of every prediction against every label.

    Its mean is the right MSE plus twice the covariance of predictions and labels, and its gradient
    pulls every prediction to the mean label.  PyTorch only warns (a UserWarning, easily lost in a
    training log; it is silenced here so the exhibit prints cleanly).
    """
    if (problem_type or infer_problem_type(num_labels, labels)) != "regression":
        return sequence_classification_loss(labels, pooled_logits, num_labels, problem_type,
                                            **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return F.mse_loss(pooled_logits, labels)  # [batch, 1] vs [batch] -> [batch, batch]


def bce_of_probabilities(labels, pooled_logits, num_labels, problem_type=None, **kwargs):
    """BUG: multi-label with sigmoid applied twice: the head's output is squashed to probabilities
    and then given to ``binary_cross_entropy_with_logits``, which applies its own sigmoid.

    sigmoid(sigmoid(z)) stays in (0.5, 0.73), so no label can ever be predicted absent with
    confidence, and the gradient is damped by sigmoid'(z) <= 1/4.
    """
    if (problem_type or infer_problem_type(num_labels, labels)) != "multi_label_classification":
        return sequence_classification_loss(labels, pooled_logits, num_labels, problem_type,
                                            **kwargs)
    return F.binary_cross_entropy_with_logits(torch.sigmoid(pooled_logits), labels)


def softmax_across_labels(labels, pooled_logits, num_labels, problem_type=None, **kwargs):
    """BUG: multi-label treated as single-label: float multi-hot rows sent to ``F.cross_entropy``.

    PyTorch reads float targets as class probabilities and does not check that they sum to 1, so the
    loss is -sum_k y_k log softmax(z)_k: the labels compete for one unit of probability instead of
    being independent yes/no questions.
    """
    if (problem_type or infer_problem_type(num_labels, labels)) != "multi_label_classification":
        return sequence_classification_loss(labels, pooled_logits, num_labels, problem_type,
                                            **kwargs)
    return F.cross_entropy(pooled_logits, labels.to(pooled_logits.dtype))


def onehot_float_labels(labels, pooled_logits, num_labels, problem_type=None, **kwargs):
    """BUG: single-label targets stored one-hot as floats (a common collator choice), problem type
    left to inference.

    Float labels with ``num_labels > 1`` infer ``multi_label_classification``, so the head silently
    trains C independent sigmoids with BCE instead of one softmax with cross-entropy.
    """
    if (problem_type or infer_problem_type(num_labels, labels)) != "single_label_classification":
        return sequence_classification_loss(labels, pooled_logits, num_labels, problem_type,
                                            **kwargs)
    onehot = F.one_hot(labels.long(), num_labels).to(pooled_logits.dtype)  # [batch, classes]
    return sequence_classification_loss(onehot, pooled_logits, num_labels)  # infers multi-label
