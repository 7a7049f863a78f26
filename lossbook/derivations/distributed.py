"""Chapter 12 (losses across processes), derived with sympy.

W ranks (data parallelism); rank r holds k micro-batches; micro-batch (r, j) has n_rj kept targets whose
token losses sum to S_rj.  DDP averages the W gradients, so the objective a training step descends is
(1/W) sum_r L_r, where L_r is the loss rank r backprops.  The full batch descends S / N with S = sum S_rj and
N = sum n_rj.  Every function returns exact sympy expressions.
"""

from __future__ import annotations

import sympy as sp

from . import cross_entropy
from .causal_lm import next_token_targets

__all__ = [
    "shard_symbols",
    "token_loss_symbols",
    "full_batch_mean",
    "ddp_objective",
    "per_rank_mean_losses",
    "global_count_losses",
    "token_weight",
    "context_parallel_loss",
]


def shard_symbols(ranks: int, micro_batches: int = 1):
    """``(S, n)``: nested lists ``S[r][j]`` (real sums of token losses) and ``n[r][j]`` (positive counts)."""
    S = [[sp.Symbol(f"S_{r}{j}", real=True) for j in range(micro_batches)] for r in range(ranks)]
    n = [[sp.Symbol(f"n_{r}{j}", positive=True) for j in range(micro_batches)] for r in range(ranks)]
    return S, n


def token_loss_symbols(counts):
    """``ell[r][j]``: one real symbol per kept token of micro-batch (r, j), ``counts[r][j]`` of them."""
    return [[[sp.Symbol(f"l_{r}{j}_{i}", real=True) for i in range(c)] for j, c in enumerate(row)]
            for r, row in enumerate(counts)]


def full_batch_mean(S, n) -> sp.Expr:
    """The single-process loss: every token's loss summed, over every kept target, S / N."""
    return sum(s for row in S for s in row) / sum(c for row in n for c in row)


def ddp_objective(per_rank_losses) -> sp.Expr:
    """What DDP's gradient is the gradient of: the mean over ranks of the losses the ranks backprop."""
    return sum(per_rank_losses) / len(per_rank_losses)


def per_rank_mean_losses(S, n) -> list[sp.Expr]:
    """Each rank's loss with no shared count: each micro-batch's mean over its own targets, divided by k."""
    return [sum(s / c for s, c in zip(Sr, nr)) / len(Sr) for Sr, nr in zip(S, n)]


def global_count_losses(S, n, world_size_factor: bool = True) -> list[sp.Expr]:
    """Each rank's loss with the all-reduced count N: sum_j S_rj / N, times W when ``world_size_factor``."""
    N = sum(c for row in n for c in row)
    W = len(S)
    factor = W if world_size_factor else 1
    return [factor * sum(Sr) / N for Sr in S]


def token_weight(objective, ell, r: int, j: int, i: int = 0) -> sp.Expr:
    """d objective / d ell[r][j][i]: the weight token i of micro-batch (r, j) gets in the gradient."""
    return sp.diff(objective, ell[r][j][i])


def context_parallel_loss(zs, tokens, ranks: int, shift: str = "once", ignore_index: int = -100) -> sp.Expr:
    """A sequence's causal-LM loss computed by ``ranks`` ranks, each holding a contiguous piece of positions.

    ``shift="once"``: the targets are the full sequence's (``next_token_targets``), cut into pieces: each
    rank's piece of ``shift_labels``.  ``shift="local"``: every rank shifts its own piece of the tokens, so the
    last position of each piece has no target.  Both sum the pieces' cross-entropies and divide by the
    all-reduced count of targets (with the world-size factor and DDP's mean, which cancel).
    """
    if shift not in ("once", "local"):
        raise ValueError(f"shift must be 'once' or 'local', got {shift!r}")
    seq = len(tokens)
    if seq % ranks:
        raise ValueError(f"the sequence length ({seq}) must be divisible by ranks ({ranks})")
    width = seq // ranks
    cuts = [slice(r * width, (r + 1) * width) for r in range(ranks)]
    if shift == "once":
        targets = next_token_targets(tokens, ignore_index)
        pieces = [targets[c] for c in cuts]
    else:
        pieces = [next_token_targets(list(tokens)[c], ignore_index) for c in cuts]
    N = sum(1 for piece in pieces for y in piece if y != ignore_index)
    per_rank = [ranks * sum(cross_entropy(z, y) for z, y in zip(zs[c], piece) if y != ignore_index) / N
                for c, piece in zip(cuts, pieces)]
    return ddp_objective(per_rank)
