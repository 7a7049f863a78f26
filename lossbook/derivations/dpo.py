"""Chapter 09 (DPO): from the KL-regularised reward objective to the DPO loss and its variants, with sympy.

The objective is over a finite set of K completions of one prompt: a policy is a probability vector pi,
the reference is pi_ref, the reward r.  Every function returns exact sympy expressions.

* ``kl_objective``: J(pi) = sum pi r - beta KL(pi || pi_ref)      (Rafailov et al. 2023, Eq. 3)
* ``optimal_policy``: pi* = pi_ref exp(r / beta) / Z                (Eq. 4)
* ``objective_gap``: J(pi) = beta log Z - beta KL(pi || pi*), so pi* is the maximiser (Gibbs' inequality)
* ``implicit_reward``: r = beta log(pi* / pi_ref) + beta log Z      (Eq. 5)
* ``bradley_terry``: P(w > l) = sigmoid(r_w - r_l); Z cancels       (Eq. 6)
* ``dpo_loss``: -log sigmoid(beta (h_w - h_l)), h = log pi - log pi_ref   (Eq. 7)
* ``dpo_grad_weight``: d loss / d h_w = -beta sigmoid(r_l - r_w)    (Sec. 4, "What does the DPO update do?")
* ``expected_loss``: the population loss when the chosen one wins with probability p: DPO's minimiser
  beta h = log(p / (1 - p)) runs away as p -> 1; IPO's, h = (2p - 1) / (2 beta), stays finite (IPO Eq. 17 gives
  the fixed point 1 / (2 beta) at p = 1).
* ``robust_loss``: rDPO with flip rate eps is unbiased: E over the noisy label = the clean loss.
* ``cdpo_loss``: conservative DPO is the cross-entropy against the smoothed label (1 - eps, eps); its optimum
  margin is log((1 - eps) / eps).
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "sigmoid",
    "policy_symbols",
    "kl_objective",
    "partition",
    "optimal_policy",
    "kl_divergence",
    "objective_gap",
    "stationarity",
    "implicit_reward",
    "bradley_terry",
    "dpo_loss",
    "dpo_grad_weight",
    "ipo_loss",
    "expected_loss",
    "robust_loss",
    "cdpo_loss",
    "variant_loss",
]


def sigmoid(x) -> sp.Expr:
    return 1 / (1 + sp.exp(-x))


def policy_symbols(k: int = 3):
    """``(pi, pi_ref, r, beta)`` for K completions: positive probabilities, real rewards, positive beta.

    pi's last entry is 1 - the others, so pi sums to 1; pi_ref is left general (the identities hold for any
    positive reference, normalised or not, because Z absorbs its mass).
    """
    free = list(sp.symbols(f"p0:{k - 1}", positive=True))
    pi = [*free, 1 - sum(free)]
    pi_ref = list(sp.symbols(f"q0:{k}", positive=True))
    r = list(sp.symbols(f"r0:{k}", real=True))
    beta = sp.Symbol("beta", positive=True)
    return pi, pi_ref, r, beta


def kl_divergence(p, q) -> sp.Expr:
    """KL(p || q) = sum p log(p / q)."""
    return sum(pi * sp.log(pi / qi) for pi, qi in zip(p, q))


def kl_objective(pi, pi_ref, r, beta) -> sp.Expr:
    """J(pi) = E_pi[r] - beta KL(pi || pi_ref): the RLHF objective for one prompt."""
    return sum(p * ri for p, ri in zip(pi, r)) - beta * kl_divergence(pi, pi_ref)


def partition(pi_ref, r, beta) -> sp.Expr:
    """Z = sum pi_ref exp(r / beta)."""
    return sum(q * sp.exp(ri / beta) for q, ri in zip(pi_ref, r))


def optimal_policy(pi_ref, r, beta) -> list[sp.Expr]:
    """pi* = pi_ref exp(r / beta) / Z."""
    z = partition(pi_ref, r, beta)
    return [q * sp.exp(ri / beta) / z for q, ri in zip(pi_ref, r)]


def objective_gap(pi, pi_ref, r, beta) -> sp.Expr:
    """beta log Z - beta KL(pi || pi*): equal to J(pi) for every pi on the simplex, so J <= beta log Z, with
    equality only at pi = pi*."""
    return beta * sp.log(partition(pi_ref, r, beta)) - beta * kl_divergence(pi, optimal_policy(pi_ref, r, beta))


def stationarity(pi_ref, r, beta) -> list[sp.Expr]:
    """dJ/dpi_i at pi* with pi's entries free (the Lagrangian without the multiplier): r_i - beta (log(pi_i /
    pi_ref_i) + 1).  At pi* every entry is the same number (beta log Z - beta), the multiplier of sum pi = 1."""
    free = list(sp.symbols(f"u0:{len(r)}", positive=True))
    j = kl_objective(free, pi_ref, r, beta)
    star = optimal_policy(pi_ref, r, beta)
    return [sp.diff(j, u).subs(dict(zip(free, star))) for u in free]


def implicit_reward(pi_star, pi_ref_i, beta, z) -> sp.Expr:
    """r = beta log(pi* / pi_ref) + beta log Z: the reward that pi* is optimal for, read off the policy."""
    return beta * sp.log(pi_star / pi_ref_i) + beta * sp.log(z)


def bradley_terry(r_w, r_l) -> sp.Expr:
    """P(w beats l) = sigmoid(r_w - r_l)."""
    return sigmoid(r_w - r_l)


def dpo_loss(h_w, h_l, beta) -> sp.Expr:
    """-log sigmoid(beta (h_w - h_l)), h = log pi(y|x) - log pi_ref(y|x)."""
    return -sp.log(sigmoid(beta * (h_w - h_l)))


def dpo_grad_weight(h_w, h_l, beta) -> sp.Expr:
    """The weight on grad log pi(y_w) in -grad loss: beta sigmoid(r_l - r_w), large when the implicit reward
    orders the pair wrongly."""
    return beta * sigmoid(beta * h_l - beta * h_w)


def ipo_loss(h_w, h_l, beta) -> sp.Expr:
    """(h_w - h_l - 1 / (2 beta))^2 (IPO, Azar et al. 2023, Eq. 17; beta is its tau)."""
    return (h_w - h_l - 1 / (2 * beta)) ** 2


def expected_loss(kind: str, h, p, beta) -> sp.Expr:
    """The loss averaged over the label when the first completion wins with probability p, as a function of
    the log-ratio margin h: ``kind`` "dpo" or "ipo"."""
    if kind == "dpo":
        return p * dpo_loss(h, 0, beta) + (1 - p) * dpo_loss(0, h, beta)
    if kind == "ipo":
        return p * ipo_loss(h, 0, beta) + (1 - p) * ipo_loss(0, h, beta)
    raise ValueError(f"kind must be 'dpo' or 'ipo', got {kind!r}")


def robust_loss(d, beta, eps) -> sp.Expr:
    """rDPO: ((1 - eps) ell(d) - eps ell(-d)) / (1 - 2 eps), ell(d) = -log sigmoid(beta d)."""
    ell = dpo_loss(d, 0, beta)
    ell_flip = dpo_loss(0, d, beta)
    return ((1 - eps) * ell - eps * ell_flip) / (1 - 2 * eps)


def cdpo_loss(d, beta, eps) -> sp.Expr:
    """Conservative DPO: -(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d)."""
    return (1 - eps) * dpo_loss(d, 0, beta) + eps * dpo_loss(0, d, beta)


def variant_loss(loss_type: str, pw, pl, rw, rl, beta, eps=0, tau=None, nw=1, nl=1) -> sp.Expr:
    """Per-pair loss of ``lossbook.dpo_loss`` as a sympy expression of the four log-probs (policy pw, pl;
    reference rw, rl), for the loss types that do not sort over the batch (all but aot, aot_unpaired, sft).

    Written from the papers' equations (each cited by its function in ``lossbook.dpo.LOSS_FUNCTIONS``), apart from the
    torch code, so the tests can lambdify it and compare values and gradients.
    """
    tau = sp.Rational(1, 20) if tau is None else tau  # TRL's default discopop_tau
    hw, hl = pw - rw, pl - rl
    d = hw - hl
    ls = lambda x: sp.log(sigmoid(x))  # noqa: E731
    forms = {
        "sigmoid": lambda: -ls(beta * d),
        "cdpo": lambda: cdpo_loss(d, beta, eps),
        "hinge": lambda: sp.Max(0, 1 - beta * d),
        "ipo": lambda: (hw / nw - hl / nl - 1 / (2 * beta)) ** 2,
        "exo_pair": lambda: (sigmoid(beta * d) * (ls(beta * d) - sp.log(1 - eps))
                             + sigmoid(-beta * d) * (ls(-beta * d) - sp.log(eps))),
        "nca_pair": lambda: -ls(beta * hw) - ls(-beta * hw) / 2 - ls(-beta * hl) / 2,
        "robust": lambda: robust_loss(d, beta, eps),
        "bco_pair": lambda: -ls(beta * hw) - ls(-beta * hl),
        "sppo_hard": lambda: (hw - 1 / (2 * beta)) ** 2 + (hl + 1 / (2 * beta)) ** 2,
        "apo_zero": lambda: 1 - sigmoid(beta * hw) + sigmoid(beta * hl),
        "apo_down": lambda: sigmoid(beta * hw) + 1 - sigmoid(beta * d),
        "discopop": lambda: (-ls(beta * d) * (1 - sigmoid(beta * d / tau))
                             + sp.exp(-beta * d) * sigmoid(beta * d / tau)),
        "sigmoid_norm": lambda: -ls(beta * (hw / nw - hl / nl)),
    }
    if loss_type not in forms:
        raise ValueError(f"loss_type must be one of {sorted(forms)}, got {loss_type!r}")
    return forms[loss_type]()
