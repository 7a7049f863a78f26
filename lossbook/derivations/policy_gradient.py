"""Chapter 13's sympy derivations: REINFORCE, the baseline, PPO's clipped surrogate, group advantages, the KL
estimators k1 and k3, and each loss type's per-token gradient weight.

Every function returns exact sympy expressions (no floats): the chapter and tests/test_policy_gradient.py assert
identities on them with ``sp.simplify(lhs - rhs) == 0``.
"""

from __future__ import annotations

import sympy as sp

__all__ = ["categorical_policy", "expected_reward", "score_function_gradient", "baseline_term",
           "clipped_objective", "clipped_gradient", "group_advantage", "k1", "k3", "expected_under",
           "kl_categorical", "token_loss_weights", "WEIGHT_RULES"]


def categorical_policy(k: int):
    """``(theta, pi)``: logits theta_0..theta_{k-1} and the softmax policy over k completions."""
    theta = list(sp.symbols(f"theta0:{k}", real=True))
    z = sum(sp.exp(t) for t in theta)
    return theta, [sp.exp(t) / z for t in theta]


def expected_reward(pi, r):
    """E_pi[r] = sum_k pi_k r_k."""
    return sum(p * rk for p, rk in zip(pi, r))


def score_function_gradient(pi, r, theta_j):
    """REINFORCE's form of dE[r]/dtheta_j: E_pi[r d log pi / d theta_j] (Williams 1992)."""
    return sum(p * rk * sp.diff(sp.log(p), theta_j) for p, rk in zip(pi, r))


def baseline_term(pi, b, theta_j):
    """E_pi[b d log pi / d theta_j] for a constant baseline b: zero, so subtracting b adds no bias."""
    return sum(p * b * sp.diff(sp.log(p), theta_j) for p in pi)


def clipped_objective(rho, A, eps_low, eps_high):
    """PPO's clipped surrogate (to maximise): min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)."""
    clipped = sp.Max(sp.Min(rho, 1 + eps_high), 1 - eps_low)
    return sp.Min(rho * A, clipped * A)


def clipped_gradient(rho, A, eps_low, eps_high):
    """d objective / d rho, piecewise: A where the unclipped term is the min, 0 where the clip holds.

    A > 0: A while rho < 1 + eps_high, then 0 (no incentive to raise rho further).  A < 0: A while
    rho > 1 - eps_low, then 0.  At rho = 1 (on-policy) it is always A: REINFORCE.
    """
    return sp.Piecewise((A, (A > 0) & (rho < 1 + eps_high)), (A, (A < 0) & (rho > 1 - eps_low)), (0, True))


def group_advantage(r, i, eps=0):
    """GRPO's advantage of completion i in the group r: (r_i - mean) / (std + eps), std Bessel-corrected."""
    n = len(r)
    mean = sum(r) / n
    std = sp.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))
    return (r[i] - mean) / (std + eps)


def k1(logp, ref):
    """k1 = log pi - log pi_ref: unbiased for KL(pi || pi_ref) under samples from pi, but can be negative."""
    return logp - ref


def k3(logp, ref):
    """k3 = exp(ref - logp) - (ref - logp) - 1 (Schulman 2020): unbiased and >= 0."""
    return sp.exp(ref - logp) - (ref - logp) - 1


def expected_under(p, f):
    """E_{y ~ p}[f(y)] for a categorical p and values f (lists of the same length)."""
    return sum(pk * fk for pk, fk in zip(p, f))


def kl_categorical(p, q):
    """KL(p || q) = sum_k p_k log(p_k / q_k)."""
    return sum(pk * sp.log(pk / qk) for pk, qk in zip(p, q))


#: How each loss type weighs a token of completion i (lengths n, batch B, max length L, accumulated tokens N):
#: the factor d loss / d logp_{i,t} is -A_i times this (on-policy, ratio 1, no KL).
WEIGHT_RULES = {
    "grpo": "1 / (B n_i): the completion's own length, then the mean over completions",
    "bnpo": "1 / sum(n): the tokens of this micro-batch",
    "dr_grpo": "1 / (B L): a constant",
    "dapo": "1 / N: the tokens of the whole accumulated batch",
}


def token_loss_weights(loss_type: str, lengths, max_length=None, global_tokens=None):
    """The per-token weight w_i of each completion under ``loss_type``, derived from the loss itself.

    The loss of a batch of completions with per-token log-probs l_{i,t} (n_i tokens each), on-policy
    (ratio exp(l - sg(l)) = 1, so d ratio / d l = 1) and advantages A_i, is built as TRL aggregates it;
    w_i = -(d loss / d l_{i,t}) / A_i, the same for every token t of completion i.  ``lengths``: sympy
    symbols or integers; ``max_length`` L (dr_grpo), ``global_tokens`` N (dapo).
    """
    B = len(lengths)
    A = sp.symbols(f"A0:{B}", real=True)
    weights = []
    for i in range(B):
        l_it = sp.Symbol("l_it", real=True)
        # one token of completion i is the variable; the others' losses are constants c_i (they do not move)
        seq_sums = [(-A[j] * l_it + sp.Symbol(f"c{j}")) if j == i else sp.Symbol(f"s{j}") for j in range(B)]
        if loss_type == "grpo":
            loss = sum(s / lengths[j] for j, s in enumerate(seq_sums)) / B
        elif loss_type == "bnpo":
            loss = sum(seq_sums) / sum(lengths)
        elif loss_type == "dr_grpo":
            loss = sum(seq_sums) / (B * max_length)
        elif loss_type == "dapo":
            loss = sum(seq_sums) / global_tokens
        else:
            raise ValueError(f"token_loss_weights knows {sorted(WEIGHT_RULES)}, got {loss_type!r}")
        weights.append(sp.simplify(-sp.diff(loss, l_it) / A[i]))
    return weights
