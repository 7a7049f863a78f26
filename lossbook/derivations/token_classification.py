"""Chapter 05's sympy expressions: token classification as per-token cross-entropy over kept tokens.

A batch is a nested list ``zs[b][t]`` of logit-symbol lists (one per token)
and ``ys[b][t]`` of tag indices, ``ignore_index`` where a token does not
count.  Exact expressions only: counts enter as Integers, weights as Rationals.
"""

from __future__ import annotations

import sympy as sp

from . import cross_entropy, cross_entropy_grad, logit_symbols

__all__ = [
    "token_logit_grid",
    "kept_count",
    "token_loss",
    "token_loss_grad",
    "per_sentence_mean_of_means",
    "word_weights",
]


def token_logit_grid(batch: int, seq: int, classes: int, name: str = "z") -> list[list[list[sp.Symbol]]]:
    """``zs[b][t] = [z_b_t_0, ..., z_b_t_{classes-1}]``: real logits of every token of a batch."""
    return [[logit_symbols(classes, f"{name}_{b}_{t}_") for t in range(seq)] for b in range(batch)]


def kept_count(ys, ignore_index: int = -100) -> int:
    """How many tokens carry a tag (the default denominator)."""
    return sum(1 for row in ys for y in row if y != ignore_index)


def token_loss(zs, ys, ignore_index: int = -100, num_items_in_batch=None) -> sp.Expr:
    """sum over kept tokens of CE(z_bt, y_bt), divided by the kept count or by ``num_items_in_batch``.

    The flatten of ``[batch, seq, classes]`` to ``[batch*seq, classes]`` is
    the double loop; the mask is the ``if``.
    """
    terms = [cross_entropy(z, y) for zrow, yrow in zip(zs, ys) for z, y in zip(zrow, yrow) if y != ignore_index]
    denominator = kept_count(ys, ignore_index) if num_items_in_batch is None else num_items_in_batch
    return sp.Add(*terms) / sp.sympify(denominator)


def token_loss_grad(zs, ys, ignore_index: int = -100, num_items_in_batch=None) -> list[list[list[sp.Expr]]]:
    """The closed form: d loss / d z_bt = (softmax(z_bt) - onehot(y_bt)) / D for kept tokens, 0 for ignored ones."""
    denominator = sp.sympify(kept_count(ys, ignore_index) if num_items_in_batch is None else num_items_in_batch)
    return [
        [
            [sp.Integer(0)] * len(z) if y == ignore_index else [g / denominator for g in cross_entropy_grad(z, y)]
            for z, y in zip(zrow, yrow)
        ]
        for zrow, yrow in zip(zs, ys)
    ]


def per_sentence_mean_of_means(zs, ys, ignore_index: int = -100) -> sp.Expr:
    """The bug: each sentence averaged over its own kept tokens, then the sentences averaged."""
    means = [token_loss([zrow], [yrow], ignore_index) for zrow, yrow in zip(zs, ys) if kept_count([yrow], ignore_index)]
    return sp.Add(*means) / len(means)


def word_weights(pieces_per_word, label_all_tokens: bool = False) -> list[sp.Rational]:
    """The weight each *word*'s loss gets in the mean over kept tokens.

    First piece only (the Hugging Face default): every word counts once, 1/W.
    Every piece labelled: a word of k pieces is k tokens, so it weighs k / sum(k).
    """
    counts = [int(k) if label_all_tokens else 1 for k in pieces_per_word]
    total = sum(counts)
    return [sp.Rational(k, total) for k in counts]
