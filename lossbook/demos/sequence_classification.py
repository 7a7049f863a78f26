"""Chapter 04's demo: token sequences with three tasks, one shared trunk with three heads, and metrics.

The three tasks read the same random token sequences (nothing is downloaded):

* regression: ``y = (#tokens in [5, 10) - #tokens in [15, 20)) / 2``, one float per sequence;
* single-label: which quarter the mean token id falls in (4 classes, thresholds 8.5, 9.5, 10.5);
* multi-label: for each of the tokens 0..4, does it occur in the sequence (5 independent labels).

Also the parity cases the chapter, its tests and its bug zoo share (``sequence_classification_cases``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "VOCAB",
    "NUM_CLASSES",
    "NUM_TAGS",
    "make_sequence_tasks",
    "MultiTaskClassifier",
    "r2_score",
    "accuracy",
    "per_label_accuracy",
    "exact_match",
    "sequence_classification_cases",
]

VOCAB = 20
NUM_CLASSES = 4  # single-label head
NUM_TAGS = 5  # multi-label head
_THRESHOLDS = torch.tensor([8.5, 9.5, 10.5])


def make_sequence_tasks(n: int, seq: int = 16, *, generator: torch.Generator | None = None):
    """``n`` random sequences and the targets of the three tasks.

    Returns ``tokens`` Long[batch, seq], ``y_regression`` Float[batch], ``y_single`` Long[batch] and
    ``y_multi`` Float[batch, 5] (multi-hot).
    """
    tokens = torch.randint(0, VOCAB, (n, seq), generator=generator)  # [batch, seq]
    counts = torch.nn.functional.one_hot(tokens, VOCAB).sum(1)  # [batch, vocab]
    y_regression = (counts[:, 5:10].sum(-1) - counts[:, 15:20].sum(-1)).float() / 2  # [batch]
    mean_id = tokens.float().mean(-1)  # [batch]
    y_single = torch.bucketize(mean_id, _THRESHOLDS)  # [batch], classes 0..3
    y_multi = (counts[:, :NUM_TAGS] > 0).float()  # [batch, tags]
    return tokens, y_regression, y_single, y_multi


class MultiTaskClassifier(nn.Module):
    """Embedding -> mean pool -> MLP trunk (shared) -> three heads, each giving pooled logits.

    ``forward(tokens)`` returns ``(regression [batch, 1], single [batch, 4], multi [batch, 5])``.
    """

    def __init__(self, vocab: int = VOCAB, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.trunk = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.regression_head = nn.Linear(hidden, 1)
        self.single_head = nn.Linear(hidden, NUM_CLASSES)
        self.multi_head = nn.Linear(hidden, NUM_TAGS)

    def forward(self, tokens):
        pooled = self.trunk(self.embed(tokens).mean(1))  # [batch, seq, hidden] -> [batch, hidden]
        return self.regression_head(pooled), self.single_head(pooled), self.multi_head(pooled)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - sum (y - yhat)^2 / sum (y - mean y)^2; ``pred`` is squeezed, so [batch, 1] meets [batch]."""
    pred, target = pred.squeeze(-1).float(), target.float()  # [batch] each
    if pred.shape != target.shape:
        raise ValueError(f"r2_score: pred {list(pred.shape)} and target {list(target.shape)} differ")
    return float(1 - ((target - pred) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Single-label accuracy: argmax over classes."""
    return float((logits.argmax(-1) == labels).float().mean())


def per_label_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-label: the fraction of (row, label) entries where sigmoid(z) > 1/2 agrees with the label."""
    return float(((logits > 0).float() == labels).float().mean())


def exact_match(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-label: the fraction of rows whose every label is right."""
    return float(((logits > 0).float() == labels).all(-1).float().mean())


def sequence_classification_cases(seed: int = 0, *, dtype=torch.float32) -> list[dict]:
    """Inputs for ``sequence_classification_loss``-shaped functions, ``pooled_logits`` first.

    All three problem types, inferred and explicit: regression with ``[batch, 1]`` logits against
    ``[batch]`` and ``[batch, 1]`` labels (batch 1 too) and with 3 outputs; single-label; multi-label
    with multi-hot and soft targets.  Labels stay float32 (or long), logits take ``dtype``.
    """
    g = torch.Generator().manual_seed(seed)

    def logits(*shape):
        return (2 * torch.randn(*shape, generator=g)).to(dtype)

    cases = []
    for batch in (6, 1):
        cases += [
            {"pooled_logits": logits(batch, 1), "labels": torch.randn(batch, generator=g), "num_labels": 1},
            {"pooled_logits": logits(batch, 1), "labels": torch.randn(batch, 1, generator=g), "num_labels": 1},
            {"pooled_logits": logits(batch, 3), "labels": torch.randn(batch, 3, generator=g), "num_labels": 3,
             "problem_type": "regression"},
            {"pooled_logits": logits(batch, 4), "labels": torch.randint(0, 4, (batch,), generator=g), "num_labels": 4},
            {"pooled_logits": logits(batch, 4), "labels": torch.randint(0, 4, (batch,), generator=g), "num_labels": 4,
             "problem_type": "single_label_classification"},
            {"pooled_logits": logits(batch, 5), "labels": torch.randint(0, 2, (batch, 5), generator=g).float(),
             "num_labels": 5},
            {"pooled_logits": logits(batch, 5), "labels": torch.rand(batch, 5, generator=g), "num_labels": 5,
             "problem_type": "multi_label_classification"},
        ]
    return cases
