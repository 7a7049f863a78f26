"""Chapter 10 (SPIN): Eq. 4.7 from the two-player view, and its fixed point p = p_data, with sympy.

Chen et al. 2024 ("Self-Play Fine-Tuning Converts Weak Language Models to Strong Language Models", arXiv
2401.01335), Section 4.  For one prompt over a finite set of K completions:

* ``main_player_loss``: the main player f tells real y ~ p_data from generated y' ~ p_t with the logistic loss
  ell(f(y) - f(y')), ell(t) = log(1 + exp(-t))                                     (Eq. 4.2 with ell logistic)
* ``opponent_objective``: the opponent maximises E_p[f] - lam KL(p || p_t)                          (Eq. 4.3)
* ``opponent_update``: its maximiser p_{t+1} = p_t exp(f / lam) / Z                                  (Eq. 4.4)
  (the same Gibbs argument as DPO's optimal policy, ``lossbook.derivations.dpo.objective_gap``)
* ``reward_of``: solved for f, f = lam log(p_{t+1} / p_t) + lam log Z                                (Eq. 4.5)
* ``spin_loss``: substituting f into ell, Z cancels: ell(lam (h_real - h_gen)), h = log p - log p_t   (Eq. 4.7)
* ``expected_spin_loss`` / ``expected_gradient``: on a categorical model p = softmax(theta) with data q, the
  expected gradient at theta = theta_t is -(lam / 2) (q - p): zero exactly when p = q (Theorem 5.2's fixed point).
"""

from __future__ import annotations

import sympy as sp

from .dpo import kl_divergence, partition

__all__ = [
    "logistic",
    "main_player_loss",
    "opponent_objective",
    "opponent_update",
    "reward_of",
    "spin_loss",
    "softmax",
    "expected_spin_loss",
    "expected_gradient",
    "gradient_closed_form",
]


def logistic(t) -> sp.Expr:
    """ell(t) = log(1 + exp(-t)) = -log sigmoid(t): the paper's choice of monotone, convex loss."""
    return sp.log(1 + sp.exp(-t))


def main_player_loss(f_real, f_generated) -> sp.Expr:
    """The main player's loss on one (real, generated) pair: ell(f(x, y) - f(x, y'))."""
    return logistic(f_real - f_generated)


def opponent_objective(p, p_t, f, lam) -> sp.Expr:
    """E_{y ~ p}[f(y)] - lam KL(p || p_t): the opponent wants high f, near the last model p_t."""
    return sum(pi * fi for pi, fi in zip(p, f)) - lam * kl_divergence(p, p_t)


def opponent_update(p_t, f, lam) -> list[sp.Expr]:
    """p_{t+1}(y) = p_t(y) exp(f(y) / lam) / Z, Z = sum p_t exp(f / lam)."""
    z = partition(p_t, f, lam)
    return [q * sp.exp(fi / lam) / z for q, fi in zip(p_t, f)]


def reward_of(p_next, p_t_y, lam, z) -> sp.Expr:
    """f(y) read back from the update: lam log(p_{t+1}(y) / p_t(y)) + lam log Z."""
    return lam * sp.log(p_next / p_t_y) + lam * sp.log(z)


def spin_loss(h_real, h_generated, lam) -> sp.Expr:
    """Eq. 4.7 per pair: ell(lam (h_real - h_gen)) = -log sigmoid(lam (h_real - h_gen)), h = log p - log p_t."""
    return logistic(lam * (h_real - h_generated))


def softmax(theta) -> list[sp.Expr]:
    denominator = sum(sp.exp(t) for t in theta)
    return [sp.exp(t) / denominator for t in theta]


def expected_spin_loss(theta, theta_t, q, lam) -> sp.Expr:
    """E_{y ~ q, y' ~ p_t}[ell(lam (log p(y)/p_t(y) - log p(y')/p_t(y')))], p = softmax(theta), p_t = softmax(theta_t).

    ``q`` is the data distribution over the K completions; the opponent p_t generates y'.
    """
    p, p_t = softmax(theta), softmax(theta_t)
    h = [sp.log(pi) - sp.log(qi) for pi, qi in zip(p, p_t)]
    return sum(q[i] * p_t[j] * spin_loss(h[i], h[j], lam) for i in range(len(q)) for j in range(len(q)))


def expected_gradient(theta, theta_t, q, lam) -> list[sp.Expr]:
    """d E[loss] / d theta_k, evaluated at theta = theta_t (the start of an iteration: policy = reference)."""
    loss = expected_spin_loss(theta, theta_t, q, lam)
    return [sp.diff(loss, t).subs(dict(zip(theta, theta_t))) for t in theta]


def gradient_closed_form(theta_t, q, lam) -> list[sp.Expr]:
    """-(lam / 2) (q_k - p_k) with p = softmax(theta_t): zero exactly when the model equals the data."""
    p = softmax(theta_t)
    return [-lam / 2 * (qk - pk) for qk, pk in zip(q, p)]
