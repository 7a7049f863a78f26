"""Chapter 14's sympy expressions: KTO's value function and weights, ORPO's log-odds, SimPO, AlphaPO, log1mexp.

Written from the papers' equations, independently of the torch code (``lossbook.kto``,
``lossbook.reference_free``), so that the notebook and the tests compare the two.
"""

from __future__ import annotations

import sympy as sp

__all__ = ["sigmoid", "kt_value", "kto_value", "kto_losses", "kto_batch_loss", "uniform_shift_slope",
           "log_odds", "orpo_penalty", "orpo_grad", "simpo_loss", "simpo_trl", "dpo_loss", "alphapo_reward",
           "cpo_variant", "log1mexp_branches"]


def sigmoid(x):
    return 1 / (1 + sp.exp(-x))


def kt_value(x, alpha, lam):
    """Kahneman & Tversky (1992)'s value of an outcome x relative to the reference point: x^alpha for gains,
    -lam (-x)^alpha for losses (alpha < 1: concave gains, convex losses; lam > 1: loss aversion)."""
    return sp.Piecewise((x ** alpha, x >= 0), (-lam * (-x) ** alpha, True))


def kto_value(r, z0, beta, desirable: bool):
    """KTO's value of a completion with implicit reward (log-ratio) r, reference point z0 (Ethayarajh et al.
    2024, Eq. 7): sigma(beta (r - z0)) for a desirable, sigma(beta (z0 - r)) for an undesirable one."""
    return sigmoid(beta * (r - z0)) if desirable else sigmoid(beta * (z0 - r))


def kto_losses(r, z0, beta, weight, desirable: bool):
    """One example's KTO loss: weight * (1 - value), as TRL's ``1 - F.sigmoid(...)`` times its weight."""
    return weight * (1 - kto_value(r, z0, beta, desirable))


def kto_batch_loss(r_d, r_u, z0, beta, w_d, w_u):
    """The mean KTO loss of a batch, desirable log-ratios ``r_d`` and undesirable ``r_u`` (lists)."""
    terms = [kto_losses(r, z0, beta, w_d, True) for r in r_d] + [kto_losses(r, z0, beta, w_u, False) for r in r_u]
    return sum(terms) / len(terms)


def uniform_shift_slope(n_d, n_u, beta, w_d, w_u):
    """d(mean KTO loss)/dc when every log-ratio moves by c, at r = z0 for all (the start of training):
    beta / 4 * (w_u n_u - w_d n_d) / (n_d + n_u).  Positive: lowering *every* completion's probability
    lowers the loss."""
    return beta / 4 * (w_u * n_u - w_d * n_d) / (n_d + n_u)


def log_odds(u):
    """log odds(y) = log p - log(1 - p) with p = exp(u), u the average per-token log-prob (ORPO, Eq. 4)."""
    return u - sp.log(1 - sp.exp(u))


def orpo_penalty(u_w, u_l, beta):
    """ORPO's odds-ratio term, beta * -log sigma(log odds_w - log odds_l) (Hong et al. 2024, Eq. 7)."""
    return -beta * sp.log(sigmoid(log_odds(u_w) - log_odds(u_l)))


def orpo_grad(u_w, u_l, beta):
    """d penalty / d u_w and d / d u_l as the paper writes them (Eqs. 8-10): delta = sigma(-(log odds
    margin)), h_w = 1 / (1 - p_w), h_l = 1 / (1 - p_l)."""
    delta = sigmoid(-(log_odds(u_w) - log_odds(u_l)))
    return -beta * delta / (1 - sp.exp(u_w)), beta * delta / (1 - sp.exp(u_l))


def dpo_loss(h_w, h_l, beta):
    """DPO: -log sigma(beta (h_w - h_l)), h the log-ratio of policy to reference."""
    return -sp.log(sigmoid(beta * (h_w - h_l)))


def simpo_loss(s_w, s_l, n_w, n_l, beta, gamma):
    """SimPO (Meng et al. 2024, Eq. 6): -log sigma(beta / n_w * s_w - beta / n_l * s_l - gamma), s the
    summed log-probs, n the completion lengths."""
    return -sp.log(sigmoid(beta / n_w * s_w - beta / n_l * s_l - gamma))


def simpo_trl(u_w, u_l, beta, gamma):
    """TRL's form: the margin of averages shifted by gamma / beta, then times beta."""
    return -sp.log(sigmoid(beta * ((u_w - u_l) - gamma / beta)))


def alphapo_reward(u, alpha):
    """AlphaPO's reward (1 - p^(-alpha)) / alpha with p = exp(u) (Gupta et al. 2025, Eq. 5)."""
    return (1 - sp.exp(u) ** (-alpha)) / alpha


def cpo_variant(loss_type: str, u_w, u_l, beta, eps=0, gamma=None):
    """Each ``cpo_loss`` type as an expression of the two log-probs (alpha = 0)."""
    gamma = sp.Rational(1, 2) if gamma is None else gamma
    m = u_w - u_l
    if loss_type == "sigmoid":
        return -(1 - eps) * sp.log(sigmoid(beta * m)) - eps * sp.log(sigmoid(-beta * m))
    if loss_type == "simpo":
        return -(1 - eps) * sp.log(sigmoid(beta * m - gamma)) - eps * sp.log(sigmoid(-(beta * m - gamma)))
    if loss_type == "hinge":
        return sp.Max(0, 1 - beta * m)
    if loss_type == "ipo":
        return (m - 1 / (2 * beta)) ** 2
    raise ValueError(loss_type)


def log1mexp_branches(x):
    """The two exact forms of log(1 - exp(x)): log(-expm1(x)) and log1p(-exp(x)), as sympy expressions
    (expm1(x) = exp(x) - 1, log1p(y) = log(1 + y)): equal as functions, different in floating point."""
    return sp.log(-(sp.exp(x) - 1)), sp.log(1 + (-sp.exp(x)))
