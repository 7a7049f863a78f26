"""Chapter 07's sympy expressions: Bradley–Terry from latent utilities, the pairwise loss, its gradients,
the 2-way softmax form, shift invariance, centering, and the preference probability.

Everything is exact (no floats): the chapter and the tests assert identities with ``sp.simplify(a - b) == 0``.
"""

from __future__ import annotations

import sympy as sp

from . import cross_entropy, softmax

__all__ = [
    "symbols",
    "sigmoid",
    "gumbel_pdf",
    "gumbel_cdf",
    "bradley_terry_from_gumbel",
    "pairwise_loss",
    "pairwise_loss_grads",
    "two_way_cross_entropy",
    "centering_term",
    "centering_grads",
    "pairwise_batch_loss",
    "preference_prob",
]


def symbols():
    """``(r_c, r_r, m, s, lam)``: the chosen and rejected rewards, the margin, a shift, the centering coefficient."""
    r_c, r_r, s = sp.symbols("r_c r_r s", real=True)
    m, lam = sp.symbols("m lambda", nonnegative=True)
    return r_c, r_r, m, s, lam


def sigmoid(x) -> sp.Expr:
    """sigma(x) = 1 / (1 + exp(-x))."""
    return 1 / (1 + sp.exp(-x))


def gumbel_pdf(x) -> sp.Expr:
    """The standard Gumbel density exp(-x - exp(-x)) (noise on each utility)."""
    return sp.exp(-x - sp.exp(-x))


def gumbel_cdf(x) -> sp.Expr:
    """The standard Gumbel distribution function exp(-exp(-x))."""
    return sp.exp(-sp.exp(-x))


def bradley_terry_from_gumbel(delta):
    """P(u_c > u_r) for utilities u = r + eps with i.i.d. standard Gumbel eps, as an explicit integral.

    P(r_c + e_c > r_r + e_r) = integral over e_r of pdf(e_r) * P(e_c > e_r - delta), delta = r_c - r_r.
    Substituting t = exp(-e_r) (dt = -t de_r) turns it into integral_0^oo exp(-t) (1 - exp(-t exp(delta))) dt
    = 1 - 1 / (1 + exp(delta)).
    Returns ``(integrand_in_e, integrand_in_t, value)``: the integrand over e_r, the substituted integrand over
    t > 0, and the value sympy integrates it to.  The chapter asserts ``value == sigmoid(delta)`` and that the
    substitution is exact (the two integrands agree under t = exp(-e)).
    """
    e = sp.Symbol("e", real=True)
    t = sp.Symbol("t", positive=True)
    integrand_e = gumbel_pdf(e) * (1 - gumbel_cdf(e - delta))
    # 1 - F(e - delta) = 1 - exp(-t e^delta); pdf(e) de = t exp(-t) (dt / t): integrand in t is
    integrand_t = sp.exp(-t) * (1 - sp.exp(-t * sp.exp(delta)))
    value = sp.integrate(integrand_t, (t, 0, sp.oo))
    return integrand_e, integrand_t, sp.simplify(value)


def pairwise_loss(r_c, r_r, m=0) -> sp.Expr:
    """-log sigma(r_c - r_r - m): one pair's Bradley–Terry negative log-likelihood with margin m."""
    return -sp.log(sigmoid(r_c - r_r - m))


def pairwise_loss_grads(r_c, r_r, m=0) -> tuple[sp.Expr, sp.Expr]:
    """The closed forms (dL/dr_c, dL/dr_r) = (-(1 - sigma(delta - m)), 1 - sigma(delta - m))."""
    w = 1 - sigmoid(r_c - r_r - m)
    return -w, w


def two_way_cross_entropy(r_c, r_r) -> sp.Expr:
    """Cross-entropy of the 2-way softmax over (r_c, r_r) with label 0 (chosen): laplace-torch's training form."""
    return cross_entropy([r_c, r_r], 0)


def centering_term(r_c, r_r, lam) -> sp.Expr:
    """TRL's centering for one pair: lam * (r_c + r_r)^2 (the batch takes the mean over pairs)."""
    return lam * (r_c + r_r) ** 2


def centering_grads(r_c, r_r, lam) -> tuple[sp.Expr, sp.Expr]:
    """The closed forms d/dr_c = d/dr_r = 2 lam (r_c + r_r)."""
    g = 2 * lam * (r_c + r_r)
    return g, g


def pairwise_batch_loss(chosen, rejected, margins=None, lam=None) -> sp.Expr:
    """The whole batch: mean_i pairwise_loss_i + lam * mean_i (r_c,i + r_r,i)^2, as ``pairwise_reward_loss``."""
    n = sp.Integer(len(chosen))
    margins = margins if margins is not None else [0] * len(chosen)
    loss = sum(pairwise_loss(c, r, m) for c, r, m in zip(chosen, rejected, margins, strict=True)) / n
    if lam is not None:
        loss += sum(centering_term(c, r, lam) for c, r in zip(chosen, rejected, strict=True)) / n
    return loss


def preference_prob(chosen_outputs, rejected_outputs) -> sp.Expr:
    """Seed 000's P(chosen): softmax over the pair of each side's mean over its k outputs, entry 0."""
    k = sp.Integer(len(chosen_outputs))
    means = [sum(chosen_outputs) / k, sum(rejected_outputs) / k]
    return softmax(means)[0]
