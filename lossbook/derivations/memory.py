"""Chapter 11's derivations: why the loss can be computed in chunks, and what the naive path costs.

Every function returns exact sympy expressions (no floats).
"""

from __future__ import annotations

import sympy as sp

from . import cross_entropy

__all__ = [
    "projection_symbols",
    "token_logits",
    "fused_loss",
    "chunked_loss",
    "mean_of_chunk_means",
    "weight_grad_closed_form",
    "memory_symbols",
    "naive_peak_bytes",
    "chunked_peak_bytes",
]


def projection_symbols(vocab: int, hidden: int, tokens: int):
    """``(W, hs)``: a ``vocab x hidden`` matrix of real unknowns and ``tokens`` hidden vectors of length hidden."""
    W = sp.Matrix(vocab, hidden, lambda i, j: sp.Symbol(f"w{i}{j}", real=True))
    hs = [sp.Matrix(hidden, 1, lambda j, _, t=t: sp.Symbol(f"h{t}{j}", real=True)) for t in range(tokens)]
    return W, hs


def token_logits(W, h) -> list[sp.Expr]:
    """z = W h: the logits of one token (the output projection without a bias)."""
    return list(W * h)


def fused_loss(W, hs, ys, denominator) -> sp.Expr:
    """sum over kept tokens of CE(W h_t, y_t), divided once by ``denominator`` (labels < 0 are ignored)."""
    return sum(cross_entropy(token_logits(W, h), y) for h, y in zip(hs, ys) if y >= 0) / sp.sympify(denominator)


def chunked_loss(W, hs, ys, denominator, chunk: int) -> sp.Expr:
    """The same sum cut into chunks of ``chunk`` tokens: sum over chunks of (chunk sum / shared denominator)."""
    return sum(fused_loss(W, hs[s:s + chunk], ys[s:s + chunk], denominator) for s in range(0, len(hs), chunk))


def mean_of_chunk_means(W, hs, ys, chunk: int) -> sp.Expr:
    """The bug: each chunk divided by its own count, then the chunk means averaged."""
    means = []
    for s in range(0, len(hs), chunk):
        kept = sum(1 for y in ys[s:s + chunk] if y >= 0)
        if kept:
            means.append(fused_loss(W, hs[s:s + chunk], ys[s:s + chunk], kept))
    return sum(means) / len(means)


def weight_grad_closed_form(W, hs, ys, denominator) -> sp.Matrix:
    """dL/dW = sum_t (softmax(W h_t) - e_{y_t}) h_t^T / D: a sum over tokens, so chunks add up."""
    vocab = W.shape[0]
    total = sp.zeros(*W.shape)
    for h, y in zip(hs, ys):
        if y < 0:
            continue
        z = token_logits(W, h)
        p = [sp.exp(zi) / sum(sp.exp(zj) for zj in z) for zi in z]
        g = sp.Matrix(vocab, 1, [p[i] - (1 if i == y else 0) for i in range(vocab)])
        total += g * h.T
    return total / sp.sympify(denominator)


def memory_symbols():
    """Positive integer symbols ``B, T, V, H, c, b`` (batch, seq, vocab, hidden, chunk, bytes per element)."""
    return sp.symbols("B T V H c b", positive=True, integer=True)


def naive_peak_bytes(B, T, V):
    """Measured in the chapter: float32 logits, their log-softmax and their gradient alive at once."""
    return 3 * B * T * V * 4


def chunked_peak_bytes(V, H, c):
    """The float32 weight gradient [V, H] plus one float32 chunk [c, V] (per-token vectors left out)."""
    return (V * H + c * V) * 4
