"""Chapter 15 (distillation): the KLs, the generalised JSD, temperature and T^2, with sympy.

For a student with logits z_s and a teacher with logits z_t over the same K classes, at temperature T,
p_s = softmax(z_s / T), p_t = softmax(z_t / T):

* ``forward_kl`` KL(p_t || p_s) = ``soft_cross_entropy`` CE(p_t, p_s) - H(p_t): the teacher's entropy does not
  depend on the student, so its gradient is chapter 01's softmax - target with the soft target p_t, over T;
* ``reverse_kl`` KL(p_s || p_t): gradient p_s (log p_s - log p_t - KL) / T (``reverse_kl_grad``);
* ``generalized_jsd`` (Agarwal et al. 2024, Eq. 1): beta KL(p_t || m) + (1 - beta) KL(p_s || m),
  m = beta p_t + (1 - beta) p_s; 0 at beta = 0 and 1, and JSD / beta -> forward KL (beta -> 0),
  JSD / (1 - beta) -> reverse KL (beta -> 1); gradient (1 - beta) p_s (log p_s - log m - KL(p_s || m)) / T;
* temperature: the gradient carries 1/T from the chain rule, and at high T the softmax difference is itself
  O(1/T): T^2 times the gradient tends to (centred logit difference) / K (Hinton et al. 2015, Section 2.1),
  hence the T^2 factor on a soft loss that is mixed with a hard-label one;
* mode covering vs seeking: on a two-mode teacher, the forward KL prefers a wide student between the modes,
  the reverse KL a narrow one on one mode (``two_mode_example``).
"""

from __future__ import annotations

import sympy as sp

from . import entropy, kl_divergence, softmax

__all__ = [
    "tempered",
    "forward_kl",
    "soft_cross_entropy",
    "forward_kl_grad",
    "reverse_kl",
    "reverse_kl_grad",
    "mixture",
    "generalized_jsd",
    "jsd_grad",
    "through_softmax",
    "jsd_grad_in_probs",
    "hinton_limit",
    "mixed_loss",
    "two_mode_example",
]


def tempered(z, T) -> list[sp.Expr]:
    """softmax(z / T)."""
    return softmax([zi / T for zi in z])


def forward_kl(zs, zt, T=1) -> sp.Expr:
    """KL(p_t || p_s) = sum p_t (log p_t - log p_s)."""
    return kl_divergence(tempered(zt, T), tempered(zs, T))


def soft_cross_entropy(zs, zt, T=1) -> sp.Expr:
    """CE(p_t, p_s) - H(p_t): cross-entropy to the soft target minus the target's entropy."""
    ps, pt = tempered(zs, T), tempered(zt, T)
    return -sum(q * sp.log(p) for q, p in zip(pt, ps)) - entropy(pt)


def forward_kl_grad(zs, zt, T=1) -> list[sp.Expr]:
    """d KL(p_t || p_s) / d z_s = (p_s - p_t) / T."""
    return [(p - q) / T for p, q in zip(tempered(zs, T), tempered(zt, T))]


def reverse_kl(zs, zt, T=1) -> sp.Expr:
    """KL(p_s || p_t)."""
    return kl_divergence(tempered(zs, T), tempered(zt, T))


def reverse_kl_grad(zs, zt, T=1) -> list[sp.Expr]:
    """d KL(p_s || p_t) / d z_s = p_s (log p_s - log p_t - KL(p_s || p_t)) / T."""
    ps, pt = tempered(zs, T), tempered(zt, T)
    kl = reverse_kl(zs, zt, T)
    return [p * (sp.log(p) - sp.log(q) - kl) / T for p, q in zip(ps, pt)]


def mixture(ps, pt, beta) -> list[sp.Expr]:
    """m = beta p_t + (1 - beta) p_s (TRL: log(1 - beta) + log p_s and log(beta) + log p_t, log-sum-exp'd)."""
    return [beta * q + (1 - beta) * p for p, q in zip(ps, pt)]


def generalized_jsd(ps, pt, beta) -> sp.Expr:
    """beta KL(p_t || m) + (1 - beta) KL(p_s || m) of two distributions (Agarwal et al. 2024, Eq. 1)."""
    m = mixture(ps, pt, beta)
    return beta * kl_divergence(pt, m) + (1 - beta) * kl_divergence(ps, m)


def jsd_grad(zs, zt, beta, T=1) -> list[sp.Expr]:
    """d JSD_beta / d z_s = (1 - beta) p_s (log p_s - log m - KL(p_s || m)) / T."""
    ps, pt = tempered(zs, T), tempered(zt, T)
    m = mixture(ps, pt, beta)
    kl = kl_divergence(ps, m)
    return [(1 - beta) * p * (sp.log(p) - sp.log(mi) - kl) / T for p, mi in zip(ps, m)]


def through_softmax(f, p, k: int) -> sp.Expr:
    """d f / d z_k for f a function of p = softmax(z) (written in the p's): sum_j df/dp_j p_j (delta_jk - p_k)."""
    return sum(sp.diff(f, pj) * pj * ((1 if j == k else 0) - p[k]) for j, pj in enumerate(p))


def jsd_grad_in_probs(p, q, beta, k: int) -> sp.Expr:
    """``jsd_grad`` at T = 1 written in the student's p and the teacher's q (``through_softmax``'s coordinates)."""
    m = mixture(p, q, beta)
    return (1 - beta) * p[k] * (sp.log(p[k]) - sp.log(m[k]) - kl_divergence(p, m))


def hinton_limit(zs, zt) -> list[sp.Expr]:
    """lim_{T -> oo} T^2 d KL(p_t || p_s) / d z_s = ((z_s - z_t) - mean(z_s - z_t)) / K."""
    d = [a - b for a, b in zip(zs, zt)]
    mean = sum(d) / len(d)
    return [(di - mean) / len(d) for di in d]


def mixed_loss(zs, zt, y: int, T, alpha, t_squared: bool = True) -> sp.Expr:
    """alpha T^2 KL_T(p_t || p_s) + (1 - alpha) CE(softmax(z_s), y): Hinton's mix (without T^2 if asked)."""
    factor = T**2 if t_squared else 1
    return alpha * factor * forward_kl(zs, zt, T) - (1 - alpha) * sp.log(softmax(list(zs))[y])


def two_mode_example() -> dict:
    """A teacher with two modes over three outcomes and two students: one wide between the modes, one narrow on
    the left mode (exact rationals)."""
    return {"teacher": [sp.Rational(9, 20), sp.Rational(1, 10), sp.Rational(9, 20)],
            "wide": [sp.Rational(1, 4), sp.Rational(1, 2), sp.Rational(1, 4)],
            "narrow": [sp.Rational(4, 5), sp.Rational(3, 20), sp.Rational(1, 20)]}
