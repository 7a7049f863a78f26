"""Chapter 02 (causal LM loss): next-token prediction, derived with sympy.

A sequence x_0 .. x_{T-1} gets one row of logits per position, ``zs[t]``; row t is scored against the next
token x_{t+1}, and the last row against nothing.  Every function returns exact sympy expressions.
"""

from __future__ import annotations

import itertools

import sympy as sp

from . import cross_entropy, logit_symbols, onehot, softmax

__all__ = [
    "position_logits",
    "next_token_targets",
    "joint_symbols",
    "chain_rule_factors",
    "sequence_nll",
    "mean_next_token_nll",
    "perplexity",
    "inverse_geometric_mean",
    "next_token_grad",
]


def position_logits(seq: int, vocab: int, name: str = "z") -> list[list[sp.Symbol]]:
    """``zs[t][i]``: the real logit of token i at position t (``z_t_i``), seq x vocab symbols."""
    return [logit_symbols(vocab, f"{name}{t}_") for t in range(seq)]


def next_token_targets(tokens, ignore_index: int = -100) -> list[int]:
    """The shift: position t's target is tokens[t + 1]; the last position gets ``ignore_index``.

    ``ignore_index`` in ``tokens`` (padding, prompt) stays ignored after the shift.
    """
    return [*list(tokens)[1:], ignore_index]


def joint_symbols(seq: int, vocab: int, name: str = "q") -> dict[tuple[int, ...], sp.Symbol]:
    """A general joint distribution over sequences of length ``seq``: one positive symbol per sequence."""
    return {xs: sp.Symbol(name + "".join(map(str, xs)), positive=True)
            for xs in itertools.product(range(vocab), repeat=seq)}


def chain_rule_factors(joint: dict, xs: tuple[int, ...]) -> list[sp.Expr]:
    """p(x_0), p(x_1 | x_0), ..., p(x_{T-1} | x_<T-1), each a ratio of marginals of ``joint``.

    P(x_<=t) sums the joint over every continuation; p(x_t | x_<t) = P(x_<=t) / P(x_<t).  Their product
    telescopes to joint[xs] / (total mass): the chain rule of probability.
    """
    def marginal(prefix):
        return sum(q for seq, q in joint.items() if seq[: len(prefix)] == tuple(prefix))

    return [marginal(xs[: t + 1]) / marginal(xs[:t]) for t in range(len(xs))]


def sequence_nll(zs, tokens) -> sp.Expr:
    """-log p(x_1, ..., x_{T-1} | x_0) = -log prod_t softmax(zs[t])[x_{t+1}], before any algebra."""
    return -sp.log(sp.Mul(*[softmax(z)[y] for z, y in zip(zs[:-1], list(tokens)[1:])]))


def mean_next_token_nll(zs, tokens, ignore_index: int = -100, num_items_in_batch=None) -> sp.Expr:
    """The causal LM loss: sum of cross_entropy(zs[t], tokens[t+1]) over kept targets / N.

    N = the number of kept targets (or ``num_items_in_batch``); the last position and targets equal to
    ``ignore_index`` do not count.
    """
    pairs = [(z, y) for z, y in zip(zs, next_token_targets(tokens, ignore_index)) if y != ignore_index]
    denominator = len(pairs) if num_items_in_batch is None else num_items_in_batch
    return sum(cross_entropy(z, y) for z, y in pairs) / sp.sympify(denominator)


def perplexity(zs, tokens, ignore_index: int = -100) -> sp.Expr:
    """exp(mean NLL): the number of equally likely tokens the model is, on average, choosing between."""
    return sp.exp(mean_next_token_nll(zs, tokens, ignore_index))


def inverse_geometric_mean(probs) -> sp.Expr:
    """1 / (prod_t p_t)^(1/N): perplexity written with the probabilities of the targets."""
    return 1 / sp.Mul(*probs) ** sp.Rational(1, len(probs))


def next_token_grad(zs, tokens, ignore_index: int = -100) -> list[list[sp.Expr]]:
    """The closed form of d loss / d zs[t]: (softmax(zs[t]) - onehot(tokens[t+1])) / N, zero rows elsewhere.

    Rows with no target (the last position, ignored targets) get exactly zero.
    """
    targets = next_token_targets(tokens, ignore_index)
    kept = sum(1 for y in targets if y != ignore_index)
    rows = []
    for z, y in zip(zs, targets):
        if y == ignore_index:
            rows.append([sp.Integer(0)] * len(z))
        else:
            rows.append([(p - e) / kept for p, e in zip(softmax(z), onehot(len(z), y))])
    return rows
