"""Chapter 03's derivations: the masked-LM loss, its gradient, and the arithmetic of 80/10/10 masking.

Exact sympy expressions (no floats); probabilities are passed as ``Rational`` or symbols.
"""

from __future__ import annotations

import sympy as sp
from sympy.stats import Bernoulli, E

from . import cross_entropy, cross_entropy_grad

__all__ = [
    "mlm_labels",
    "masked_cross_entropy",
    "masked_cross_entropy_grad",
    "expected_scored",
    "masking_outcomes",
    "visible_position_odds",
    "no_position_scored",
]


def mlm_labels(tokens, selected, ignore_index: int = -100) -> list[int]:
    """The label row: the original token where the masking selected the position, ``ignore_index`` elsewhere."""
    return [int(t) if s else ignore_index for t, s in zip(tokens, selected)]


def masked_cross_entropy(zs, tokens, selected) -> sp.Expr:
    """Mean over the selected positions of -log softmax(z_t)[token_t]; unselected positions do not appear.

    ``zs``: one list of logit symbols per position; ``tokens``: the original ids; ``selected``: booleans.
    """
    kept = [(z, t) for z, t, s in zip(zs, tokens, selected) if s]
    return sum(cross_entropy(z, t) for z, t in kept) / sp.Integer(len(kept))


def masked_cross_entropy_grad(zs, tokens, selected) -> list[list[sp.Expr]]:
    """The closed form: dL/dz_t = (softmax(z_t) - onehot(token_t)) / n at selected t, 0 elsewhere (n selected)."""
    n = sp.Integer(sum(bool(s) for s in selected))
    return [[g / n for g in cross_entropy_grad(z, t)] if s else [sp.Integer(0)] * len(z)
            for z, t, s in zip(zs, tokens, selected)]


def expected_scored(n_tokens, p) -> sp.Expr:
    """E[number of scored positions] for ``n_tokens`` ordinary tokens, each selected ~ Bernoulli(p).

    Linearity of expectation: the sum of n expectations E[X_i] = p, whatever the dependence.
    """
    return sp.simplify(n_tokens * E(Bernoulli("X", p)))


def masking_outcomes(p, mask_replace_prob, random_replace_prob) -> dict[str, sp.Expr]:
    """Unconditional probability of each fate of an ordinary token, built from the collator's conditionals.

    selected ~ p; given selected, <mask> ~ m; given selected and not <mask>, random ~ r / (1 - m)
    (the scaled probability of ``torch_mask_tokens``); the rest stays unchanged.
    """
    m, r = sp.sympify(mask_replace_prob), sp.sympify(random_replace_prob)
    random_given_not_masked = r / (1 - m) if m != 1 else sp.Integer(0)  # the collator skips this draw at m = 1
    return {
        "not selected": 1 - p,
        "selected": p,
        "<mask>": p * m,
        "random": p * (1 - m) * random_given_not_masked,
        "unchanged": p * (1 - m) * (1 - random_given_not_masked),
    }


def visible_position_odds(p, mask_replace_prob, random_replace_prob) -> dict[str, sp.Expr]:
    """What the model can infer at a position whose input token is *not* <mask> (a "visible" token).

    By Bayes' rule over :func:`masking_outcomes` (ignoring the 1/V chance that a random draw is <mask>
    itself or the original token):

    * ``scored``: P(the position is scored | visible) = p (1 - m) / (1 - p m);
    * ``corrupted``: P(the visible token is not the original | visible) = p r / (1 - p m);
    * ``corrupted if scored``: P(not the original | visible and scored) = r / (1 - m).
    """
    fate = masking_outcomes(p, mask_replace_prob, random_replace_prob)
    visible = fate["not selected"] + fate["random"] + fate["unchanged"]
    return {
        "scored": sp.simplify((fate["random"] + fate["unchanged"]) / visible),
        "corrupted": sp.simplify(fate["random"] / visible),
        "corrupted if scored": sp.simplify(fate["random"] / (fate["random"] + fate["unchanged"])),
    }


def no_position_scored(n_tokens, p) -> sp.Expr:
    """P(no position of ``n_tokens`` is selected) = (1 - p)^n: the chance that the mean is 0/0 = NaN."""
    return (1 - p) ** n_tokens
