"""The book's sympy identities hold, and a wrong derivation is caught."""

import pytest
import sympy as sp

from lossbook import derivations as d


def is_zero(expr) -> bool:
    return sp.simplify(expr) == 0


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_index_and_onehot_forms_agree(classes):
    z = d.logit_symbols(classes)
    for y in range(classes):
        assert is_zero(d.cross_entropy(z, y) - d.cross_entropy_onehot(z, d.onehot(classes, y)))
        assert is_zero(sp.expand_log(d.cross_entropy(z, y), force=True) - (d.log_sum_exp(z) - z[y]))


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_gradient_is_softmax_minus_onehot(classes):
    z = d.logit_symbols(classes)
    for y in range(classes):
        loss = d.cross_entropy(z, y)
        for zi, g in zip(z, d.cross_entropy_grad(z, y)):
            assert is_zero(sp.diff(loss, zi) - g)


def test_wrong_gradient_is_caught():
    z = d.logit_symbols(3)
    loss = d.cross_entropy(z, 0)
    wrong = [p + e for p, e in zip(d.softmax(z), d.onehot(3, 0))]  # sign error on the one-hot term
    assert not is_zero(sp.diff(loss, z[0]) - wrong[0])


def test_maximum_likelihood_is_mean_cross_entropy():
    zs = [d.logit_symbols(3, name) for name in ("a", "b")]
    ys = [2, 0]
    nll = sp.expand_log(d.negative_log_likelihood(zs, ys), force=True)
    assert is_zero(nll / 2 - sp.expand_log(d.mean_cross_entropy(zs, ys), force=True))


def test_mean_cross_entropy_skips_ignored_and_uses_given_denominator():
    zs = [d.logit_symbols(2, name) for name in ("a", "b", "c")]
    ce = d.mean_cross_entropy(zs, [1, -100, 0], num_items_in_batch=5)
    assert is_zero(ce - (d.cross_entropy(zs[0], 1) + d.cross_entropy(zs[2], 0)) / 5)


def test_log_sum_exp_shift_identity():
    z = d.logit_symbols(3)
    m = sp.Symbol("m", real=True)
    assert is_zero(sp.expand_log(d.log_sum_exp_shifted(z, m) - d.log_sum_exp(z), force=True).rewrite(sp.exp))


def test_label_smoothing_gradient():
    z = d.logit_symbols(3)
    eps = sp.Rational(1, 10)
    q = d.label_smoothed_target(3, 2, eps)
    assert sum(q) == 1 and all(isinstance(qi, sp.Rational) for qi in q)
    loss = d.label_smoothed_cross_entropy(z, 2, eps)
    for zi, p, qi in zip(z, d.softmax(z), q):
        assert is_zero(sp.diff(loss, zi) - (p - qi))


def test_accumulation_identities():
    s1, s2, n1, n2 = sp.symbols("S1 S2 n1 n2", positive=True)
    full = (s1 + s2) / (n1 + n2)
    assert is_zero(d.accumulated_shared_denominator([s1, s2], [n1, n2]) - full)
    naive = d.accumulated_mean_of_means([s1, s2], [n1, n2])
    assert not is_zero(naive - full)
    assert is_zero(naive.subs(n2, n1) - full.subs(n2, n1))  # equal counts: the naive recipe is right
