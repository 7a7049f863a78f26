"""The book's sympy derivations, in one place: notebooks and tests use the same expressions.

Every function returns exact sympy expressions (no floats): the chapters
assert identities on them with ``sp.simplify(lhs - rhs) == 0``.

This module holds the foundations of chapters 00-01 (softmax, log-sum-exp, cross-entropy); each later
chapter has a submodule (``lossbook.derivations.causal_lm``, ...) that builds on them.
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "logit_symbols",
    "softmax",
    "entropy",
    "kl_divergence",
    "log_sum_exp",
    "log_sum_exp_shifted",
    "cross_entropy",
    "cross_entropy_onehot",
    "onehot",
    "cross_entropy_grad",
    "negative_log_likelihood",
    "mean_cross_entropy",
    "label_smoothed_target",
    "label_smoothed_cross_entropy",
    "accumulated_mean_of_means",
    "accumulated_shared_denominator",
    "causal_lm",
    "masked_lm",
    "sequence_classification",
    "token_classification",
    "question_answering",
    "reward",
    "reward_laplace",
    "distributed",
    "dpo",
    "spin",
    "memory",
]


def logit_symbols(classes: int, name: str = "z") -> list[sp.Symbol]:
    """``[z0, z1, ...]``: real logits for one item."""
    return list(sp.symbols(f"{name}0:{classes}", real=True))


def softmax(z) -> list[sp.Expr]:
    """p_i = exp(z_i) / sum_j exp(z_j)."""
    denominator = sum(sp.exp(zj) for zj in z)
    return [sp.exp(zi) / denominator for zi in z]


def log_sum_exp(z) -> sp.Expr:
    """log sum_j exp(z_j): the log of softmax's denominator."""
    return sp.log(sum(sp.exp(zj) for zj in z))


def log_sum_exp_shifted(z, m) -> sp.Expr:
    """m + log sum_j exp(z_j - m): equal to ``log_sum_exp(z)`` for every m; m = max(z) never overflows."""
    return m + sp.log(sum(sp.exp(zj - m) for zj in z))


def cross_entropy(z, y: int) -> sp.Expr:
    """Index form: -log softmax(z)[y] = log_sum_exp(z) - z_y."""
    return -sp.log(softmax(z)[y])


def onehot(classes: int, y: int) -> list[sp.Integer]:
    return [sp.Integer(1 if i == y else 0) for i in range(classes)]


def cross_entropy_onehot(z, q) -> sp.Expr:
    """Distribution form: H(q, p) = -sum_i q_i log p_i with p = softmax(z)."""
    return -sum(qi * sp.log(pi) for qi, pi in zip(q, softmax(z)))


def cross_entropy_grad(z, y: int) -> list[sp.Expr]:
    """The closed form the chapter derives: dL/dz = softmax(z) - onehot(y)."""
    return [pi - ei for pi, ei in zip(softmax(z), onehot(len(z), y))]


def negative_log_likelihood(zs, ys) -> sp.Expr:
    """-log prod_n p(y_n | x_n): the likelihood of a data set, before any algebra."""
    return -sp.log(sp.Mul(*[softmax(z)[y] for z, y in zip(zs, ys)]))


def mean_cross_entropy(zs, ys, ignore_index: int = -100, num_items_in_batch=None) -> sp.Expr:
    """sum of per-item cross-entropies over kept items / (kept count or ``num_items_in_batch``)."""
    kept = [(z, y) for z, y in zip(zs, ys) if y != ignore_index]
    denominator = len(kept) if num_items_in_batch is None else num_items_in_batch
    return sum(cross_entropy(z, y) for z, y in kept) / sp.sympify(denominator)


def entropy(q) -> sp.Expr:
    """H(q) = -sum_i q_i log q_i (terms with q_i = 0 are 0)."""
    return -sum(qi * sp.log(qi) for qi in q if qi != 0)


def kl_divergence(q, p) -> sp.Expr:
    """KL(q || p) = sum_i q_i log(q_i / p_i) (terms with q_i = 0 are 0); H(q, p) = H(q) + KL(q || p)."""
    return sum(qi * (sp.log(qi) - sp.log(pi)) for qi, pi in zip(q, p) if qi != 0)


def label_smoothed_target(classes: int, y: int, eps) -> list[sp.Expr]:
    """(1 - eps) * onehot(y) + eps / classes: PyTorch's ``label_smoothing`` target."""
    return [(1 - eps) * e + eps / classes for e in onehot(classes, y)]


def label_smoothed_cross_entropy(z, y: int, eps) -> sp.Expr:
    return cross_entropy_onehot(z, label_smoothed_target(len(z), y, eps))


def accumulated_mean_of_means(sums, counts) -> sp.Expr:
    """k micro-batches, each averaged over its own kept items, then averaged: (1/k) sum_j S_j / n_j."""
    return sum(s / n for s, n in zip(sums, counts)) / len(sums)


def accumulated_shared_denominator(sums, counts) -> sp.Expr:
    """k micro-batches, each summed and divided by the total count N = sum_j n_j."""
    total = sum(counts)
    return sum(s / total for s in sums)


# one module per later chapter; imported last, so they can build on the names above
from . import (  # noqa: E402
    causal_lm,
    distributed,
    dpo,
    masked_lm,
    memory,
    question_answering,
    reward,
    reward_laplace,
    sequence_classification,
    spin,
    token_classification,
)
