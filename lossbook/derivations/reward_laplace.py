"""Chapter 08's sympy expressions: the Laplace approximation of a Bradley-Terry reward model's last layer.

A linear head r(x) = w . phi(x) + b scores the two items of a pair, (phi0, phi1); y = 1 when item 1 is preferred.
The pieces the chapter asserts: the Bradley-Terry negative log-likelihood and its Hessian in w,
sigma (1 - sigma) (phi1 - phi0)(phi1 - phi0)^T; the same matrix as the generalised Gauss-Newton J^T Lambda J of the
2-way softmax cross-entropy over (r0, r1); a zero row and column for the bias; the Laplace log marginal likelihood
(exact for a quadratic log joint); the predictive variance J Sigma J^T of the linearised reward.
Everything is exact (no floats), so the chapter asserts identities with ``sp.simplify(lhs - rhs) == 0``.
"""

from __future__ import annotations

import sympy as sp

from . import cross_entropy

__all__ = [
    "head_symbols",
    "sigmoid",
    "reward",
    "bradley_terry_nll",
    "softmax_pair_nll",
    "hessian",
    "bradley_terry_hessian",
    "softmax_ggn",
    "laplace_log_evidence_1d",
    "laplace_log_evidence_formula_1d",
    "linearised_reward_variance",
]


def head_symbols(hidden: int):
    """``w`` (hidden weights), ``b`` (bias), ``phi0``, ``phi1`` (the two items' features): real symbols."""
    w = list(sp.symbols(f"w0:{hidden}", real=True))
    b = sp.Symbol("b", real=True)
    phi0 = list(sp.symbols(f"u0:{hidden}", real=True))
    phi1 = list(sp.symbols(f"v0:{hidden}", real=True))
    return w, b, phi0, phi1


def sigmoid(z) -> sp.Expr:
    """sigma(z) = 1 / (1 + exp(-z))."""
    return 1 / (1 + sp.exp(-z))


def reward(w, b, phi) -> sp.Expr:
    """r = w . phi + b: the reward head, linear in its parameters."""
    return sum(wi * pi for wi, pi in zip(w, phi, strict=True)) + b


def bradley_terry_nll(w, b, phi0, phi1, y) -> sp.Expr:
    """-log P(y | pair) with P(item 1 preferred) = sigma(r1 - r0) (Bradley & Terry 1952; y in {0, 1})."""
    d = reward(w, b, phi1) - reward(w, b, phi0)
    return -(y * sp.log(sigmoid(d)) + (1 - y) * sp.log(1 - sigmoid(d)))


def softmax_pair_nll(w, b, phi0, phi1, y: int) -> sp.Expr:
    """The same pair as 2-way classification: cross-entropy of softmax((r0, r1)) at index y (seed 003's form)."""
    return cross_entropy([reward(w, b, phi0), reward(w, b, phi1)], y)


def hessian(expr, params) -> sp.Matrix:
    """d^2 expr / d params^2."""
    return sp.Matrix([[sp.diff(expr, pi, pj) for pj in params] for pi in params])


def bradley_terry_hessian(w, b, phi0, phi1) -> sp.Matrix:
    """The closed form over (w, b): sigma(d)(1 - sigma(d)) g g^T with g = (phi1 - phi0, 0) -- 0 for the bias."""
    d = reward(w, b, phi1) - reward(w, b, phi0)
    g = sp.Matrix([p1 - p0 for p0, p1 in zip(phi0, phi1, strict=True)] + [0])
    return sigmoid(d) * (1 - sigmoid(d)) * g * g.T


def softmax_ggn(w, b, phi0, phi1) -> sp.Matrix:
    """Generalised Gauss-Newton of the 2-way softmax cross-entropy: J^T (diag p - p p^T) J, J = d(r0, r1)/d(w, b)."""
    r = [reward(w, b, phi0), reward(w, b, phi1)]
    params = list(w) + [b]
    J = sp.Matrix([[sp.diff(ri, t) for t in params] for ri in r])  # [2, params]
    denominator = sp.exp(r[0]) + sp.exp(r[1])
    p = sp.Matrix([sp.exp(r[0]) / denominator, sp.exp(r[1]) / denominator])
    Lam = sp.diag(*p) - p * p.T  # [2, 2] the Hessian of cross-entropy in the logits
    return J.T * Lam * J


def laplace_log_evidence_1d(loss_map, h, lam, theta_map):
    """log of the integral over theta of exp(log joint), for a log joint exactly quadratic about its mode:
    log p(D | theta) p(theta) = -loss_map - lam theta_map^2 / 2 + log sqrt(lam / 2 pi)
                                - (h + lam) (theta - theta_map)^2 / 2
    (h: the likelihood's curvature; the prior N(0, 1/lam)). Integrated by sympy, not by formula."""
    theta = sp.Symbol("theta", real=True)
    log_joint_at_mode = -loss_map - lam * theta_map**2 / 2 + sp.log(sp.sqrt(lam / (2 * sp.pi)))
    integral = sp.integrate(sp.exp(-(h + lam) * (theta - theta_map) ** 2 / 2), (theta, -sp.oo, sp.oo))
    return log_joint_at_mode + sp.log(integral)


def laplace_log_evidence_formula_1d(loss_map, h, lam, theta_map):
    """laplace-torch's formula, one parameter: -loss - 1/2 (log(h + lam) - log lam + lam theta_map^2)."""
    return -loss_map - (sp.log(h + lam) - sp.log(lam) + lam * theta_map**2) / 2


def linearised_reward_variance(jac, chol):
    """Var[J theta] for theta = m + L z, z ~ N(0, I) (so Sigma = L L^T): computed by sympy.stats on the samples.

    ``jac``: the row J (list of P expressions); ``chol``: a P x P lower-triangular ``sp.Matrix``.
    Returns ``(variance, J Sigma J^T)`` so the caller asserts they agree."""
    from sympy.stats import Normal, variance

    P = len(jac)
    z = [Normal(f"z{i}", 0, 1) for i in range(P)]
    theta = chol * sp.Matrix(z)  # the mean m drops out of a variance
    f = sum(j * t for j, t in zip(jac, theta, strict=True))
    J = sp.Matrix([jac])
    return variance(f), (J * chol * chol.T * J.T)[0, 0]
