"""Chapter 04's sympy expressions: MSE, binary cross-entropy with logits, and the broadcasting trap.

Single-label classification is chapter 01's cross-entropy (``derivations.cross_entropy`` and
``derivations.cross_entropy_grad``); this module adds regression and multi-label, and the link
between them: binary cross-entropy on one logit z is a two-class cross-entropy on the logits (0, z).
Everything is exact (no floats), so the chapter asserts identities with ``sp.simplify(lhs - rhs) == 0``.
"""

from __future__ import annotations

import sympy as sp

from . import cross_entropy_onehot

__all__ = [
    "symbols",
    "mse",
    "mse_grad",
    "sigmoid",
    "binary_cross_entropy",
    "binary_cross_entropy_softplus",
    "binary_cross_entropy_grad",
    "multi_label_bce",
    "bce_as_two_class_cross_entropy",
    "broadcast_mse",
    "covariance",
    "variance",
    "broadcast_mse_moments",
    "bce_pos_weight",
]


def symbols(n: int, name: str) -> list[sp.Symbol]:
    """``[name0, name1, ...]``: n real symbols (logits, or real-valued labels)."""
    return list(sp.symbols(f"{name}0:{n}", real=True))


def mse(z, y) -> sp.Expr:
    """Regression: (1/N) sum_i (z_i - y_i)^2, MSELoss's mean over the N paired entries."""
    return sum((zi - yi) ** 2 for zi, yi in zip(z, y, strict=True)) / sp.Integer(len(z))


def mse_grad(z, y) -> list[sp.Expr]:
    """The closed form: dL/dz_i = 2 (z_i - y_i) / N."""
    return [2 * (zi - yi) / sp.Integer(len(z)) for zi, yi in zip(z, y, strict=True)]


def sigmoid(z) -> sp.Expr:
    """sigma(z) = 1 / (1 + exp(-z))."""
    return 1 / (1 + sp.exp(-z))


def binary_cross_entropy(z, y) -> sp.Expr:
    """One logit, one target in [0, 1]: -[y log sigma(z) + (1 - y) log(1 - sigma(z))], from first principles."""
    return -(y * sp.log(sigmoid(z)) + (1 - y) * sp.log(1 - sigmoid(z)))


def binary_cross_entropy_softplus(z, y) -> sp.Expr:
    """The same loss as log(1 + e^z) - y z (softplus(z) - y z): what BCEWithLogitsLoss evaluates stably."""
    return sp.log(1 + sp.exp(z)) - y * z


def binary_cross_entropy_grad(z, y) -> sp.Expr:
    """The closed form: dL/dz = sigma(z) - y."""
    return sigmoid(z) - y


def multi_label_bce(zs, ys) -> sp.Expr:
    """Multi-label: the mean of ``binary_cross_entropy`` over every (row, label) entry, as BCEWithLogitsLoss.

    ``zs`` and ``ys`` are lists of rows (``[batch][classes]``).
    """
    terms = [binary_cross_entropy(z, y) for zr, yr in zip(zs, ys, strict=True) for z, y in zip(zr, yr, strict=True)]
    return sum(terms) / sp.Integer(len(terms))


def bce_as_two_class_cross_entropy(z, y) -> sp.Expr:
    """Two-class cross-entropy on the logits (0, z) with target distribution (1 - y, y).

    Equal to ``binary_cross_entropy(z, y)`` for every y: softmax((0, z))[1] = sigma(z).  Chapter 07 uses
    the same link with z = r_chosen - r_rejected.
    """
    return cross_entropy_onehot([sp.Integer(0), z], [1 - y, y])


def broadcast_mse(z, y) -> sp.Expr:
    """What ``F.mse_loss(pred[B, 1], y[B])`` computes: the mean over the [B, B] matrix of (z_i - y_j)^2."""
    return sum((zi - yj) ** 2 for zi in z for yj in y) / sp.Integer(len(z) * len(y))


def covariance(z, y) -> sp.Expr:
    """Population covariance (1/B) sum_i (z_i - mean z)(y_i - mean y).

    ``broadcast_mse(z, y) = mse(z, y) + 2 * covariance(z, y)``.  The sum does not depend on how the
    predictions are paired with the labels (see :func:`broadcast_mse_moments`): better tracking raises the
    covariance and lowers the MSE by the same amount.  The broadcast gradient 2 (z_i - mean y) / B pulls
    every prediction to the mean label.
    """
    n = sp.Integer(len(z))
    mean_z, mean_y = sum(z) / n, sum(y) / n
    return sum((zi - mean_z) * (yi - mean_y) for zi, yi in zip(z, y, strict=True)) / n


def variance(z) -> sp.Expr:
    """Population variance (1/B) sum_i (z_i - mean z)^2."""
    return covariance(z, z)


def broadcast_mse_moments(z, y) -> sp.Expr:
    """The broadcast loss in moments: Var(z) + Var(y) + (mean z - mean y)^2.

    Only the two marginal distributions appear, not the pairing of z_i with y_i: shuffling the labels
    leaves the broadcast loss unchanged, so it cannot reward predictions that track their own labels.
    """
    n = sp.Integer(len(z))
    return variance(z) + variance(y) + (sum(z) / n - sum(y) / n) ** 2


def bce_pos_weight(z, y, w) -> sp.Expr:
    """Binary cross-entropy with logits and a positive-class weight w (``pos_weight`` of PyTorch's loss):

    -[w y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))].
    """
    return -(w * y * sp.log(sigmoid(z)) + (1 - y) * sp.log(1 - sigmoid(z)))
