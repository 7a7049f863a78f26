"""Chapter 06's sympy expressions: the question-answering loss, its gradient and the clamp rule.

The loss is two cross-entropies over the *tokens* of the window (the classes are positions), averaged:
loss = (CE(z_start, s) + CE(z_end, e)) / 2.  Everything here is exact (no floats).
"""

from __future__ import annotations

import sympy as sp

from . import cross_entropy, mean_cross_entropy, onehot, softmax

__all__ = [
    "clamp_position",
    "is_ignored",
    "span_loss",
    "span_loss_grad",
    "batch_span_loss",
]


def clamp_position(position: int, seq: int) -> int:
    """Upstream's rule: clamp(position, 0, seq); the result ``seq`` is the ignored index."""
    return min(max(int(position), 0), int(seq))


def is_ignored(position: int, seq: int) -> bool:
    """True when the clamped position is the ignored index: the gold token lies at or past the end."""
    return clamp_position(position, seq) == seq


def span_loss(z_start, z_end, start: int, end: int) -> sp.Expr:
    """One example, both positions inside the window: (CE(z_start, start) + CE(z_end, end)) / 2."""
    return (cross_entropy(z_start, start) + cross_entropy(z_end, end)) / 2


def span_loss_grad(z_start, z_end, start: int, end: int) -> tuple[list[sp.Expr], list[sp.Expr]]:
    """The closed form: d loss / d z_start = (softmax(z_start) - onehot(start)) / 2, and the same for the end."""
    half = sp.Rational(1, 2)
    grad_start = [half * (p - e) for p, e in zip(softmax(z_start), onehot(len(z_start), start))]
    grad_end = [half * (p - e) for p, e in zip(softmax(z_end), onehot(len(z_end), end))]
    return grad_start, grad_end


def batch_span_loss(z_starts, z_ends, starts, ends, num_items_in_batch=None) -> sp.Expr:
    """A batch, with the clamp rule: each head's mean runs over its own kept rows, then the two are averaged.

    ``z_starts[b]``, ``z_ends[b]``: the logit symbols (or numbers) of example b, all of length L.
    A head with no kept row gives ``nan`` (0/0), as upstream, unless ``num_items_in_batch`` is given.
    """
    seq = len(z_starts[0])
    heads = []
    for zs, positions in ((z_starts, starts), (z_ends, ends)):
        clamped = [clamp_position(p, seq) for p in positions]
        if num_items_in_batch is None and all(p == seq for p in clamped):
            return sp.nan
        heads.append(mean_cross_entropy(zs, clamped, ignore_index=seq, num_items_in_batch=num_items_in_batch))
    return (heads[0] + heads[1]) / 2
