import math
import re
import sys

import pytest
import torch

from lossbook import checks, fixed_cross_entropy, show_source
from lossbook.show import source_location


def _own_ce(source, target, ignore_index):
    """A reader's own cross-entropy (the checks refuse the reference itself as an answer)."""
    return torch.nn.functional.cross_entropy(source.float(), target, ignore_index=ignore_index)


def test_show_source_renders_the_real_function_without_machine_paths():
    md = show_source(fixed_cross_entropy)
    assert md.data.startswith("`lossbook/cross_entropy.py`, lines ")
    assert "def fixed_cross_entropy(" in md.data and "/work/" not in md.data and "/home/" not in md.data
    rel, first, last = source_location(fixed_cross_entropy)
    assert rel == "lossbook/cross_entropy.py" and last > first


def test_show_source_refuses_foreign_code():
    with pytest.raises(ValueError, match="outside the package"):
        show_source(pytest.approx)


def test_compare_losses_detects_a_small_perturbation():
    cases = checks.cross_entropy_cases(0)
    same = checks.compare_losses(fixed_cross_entropy, fixed_cross_entropy, cases)
    assert same.passed and same.value_error == 0.0
    off = checks.compare_losses(lambda **kw: fixed_cross_entropy(**kw) * 1.001, fixed_cross_entropy, cases)
    assert not off.passed and "FAIL" in str(off)


def test_nan_versus_number_is_an_infinite_error():
    assert math.isinf(checks._error(torch.tensor(float("nan")), torch.tensor(1.0)))
    assert checks._error(torch.tensor(float("nan")), torch.tensor(float("nan"))) == 0.0


def test_self_check_messages(capsys):
    checks.self_check("ex", ..., 1.0)
    assert "not attempted" in capsys.readouterr().out
    checks.self_check("ex", [0.5, 0.25], torch.tensor([0.5, 0.25]))
    assert "ex: correct" in capsys.readouterr().out
    checks.self_check("ex", [0.5, 0.3], torch.tensor([0.5, 0.25]))
    assert "ex: not yet" in capsys.readouterr().out
    checks.self_check("ex", [0.5], torch.tensor([0.5, 0.25]))
    assert "wrong shape" in capsys.readouterr().out


def test_check_function(capsys):
    cases = checks.cross_entropy_cases(0)
    checks.check_function("ex", ..., fixed_cross_entropy, cases)
    assert "not attempted" in capsys.readouterr().out
    checks.check_function("ex", _own_ce, fixed_cross_entropy, cases)
    assert capsys.readouterr().out.startswith("PASS")
    checks.check_function("ex", lambda **kw: _own_ce(**kw) + 1, fixed_cross_entropy, cases)
    assert capsys.readouterr().out.startswith("FAIL  ex: values differ")
    checks.check_function("ex", lambda logits, labels: logits.sum(), fixed_cross_entropy, cases)  # other names
    out = capsys.readouterr().out
    assert out.startswith("FAIL  ex: your function raised TypeError") and "source, target, ignore_index" in out


def test_error_matches_non_finite_entries_exactly():
    inf = float("inf")
    assert checks._error(torch.tensor([inf, 1.0]), torch.tensor([inf, 1.5])) == 0.5
    assert math.isinf(checks._error(torch.tensor([inf]), torch.tensor([-inf])))
    assert math.isinf(checks._error(torch.tensor([1.0, 2.0]), torch.tensor([1.0])))


def test_check_expression_passes_a_right_derivation_fails_a_wrong_one_and_never_prints_it(capsys):
    import sympy as sp

    from lossbook import derivations as d
    from lossbook.checks import check_expression

    z = d.logit_symbols(3)

    def autograd_hessian(values):
        return torch.autograd.functional.hessian(
            lambda v: fixed_cross_entropy(v[None], torch.tensor([1])), values)

    p = sp.Matrix(d.softmax(z))
    right = sp.diag(*p) - p * p.T
    mine = [sp.Symbol(f"z{i}") for i in range(3)]  # the reader's own symbols, no assumptions
    for expression in (right, right.subs(dict(zip(z, mine)))):
        check_expression("hessian", expression, z, autograd_hessian)
        assert capsys.readouterr().out.startswith("PASS  hessian")
    check_expression("hessian", sp.diag(*p), z, autograd_hessian)
    out = capsys.readouterr().out
    assert out.startswith("FAIL  hessian") and "exp" not in out
    check_expression("hessian", right * sp.Symbol("w"), z, autograd_hessian)
    assert "symbols the check does not know: ['w']" in capsys.readouterr().out
    check_expression("hessian", ..., z, autograd_hessian)
    assert "not attempted" in capsys.readouterr().out
    for _ in range(2):  # the same verdict when run again
        check_expression("hessian", right, z, autograd_hessian)
        assert capsys.readouterr().out.startswith("PASS")


def test_graded_checks_raise_the_verdict_and_only_inside_the_block(capsys):
    """nbgrader's test cells wrap the checks in ``graded()``: a failing verdict raises, a passing one does not."""
    import pytest
    import sympy as sp

    cases = checks.cross_entropy_cases(0)
    with checks.graded():
        checks.check_function("ex", _own_ce, fixed_cross_entropy, cases)
        checks.self_check("ex", [0.5], torch.tensor([0.5]))
        with pytest.raises(AssertionError, match="not attempted"):
            checks.check_function("ex", ..., fixed_cross_entropy, cases)
        with pytest.raises(AssertionError, match="FAIL  ex"):
            checks.check_function("ex", lambda **kw: _own_ce(**kw) + 1, fixed_cross_entropy, cases)
        with pytest.raises(AssertionError, match="not yet"):
            checks.self_check("ex", [0.6], torch.tensor([0.5]))
        with pytest.raises(AssertionError, match="wrong shape"):
            checks.self_check("ex", [0.5, 1.0], torch.tensor([0.5]))
        z = sp.Symbol("z0")
        with pytest.raises(AssertionError, match="does not know"):
            checks.check_expression("ex", sp.Symbol("q"), [z], lambda v: v[0])
        with pytest.raises(AssertionError, match="FAIL  ex: differs from the reference"):
            checks.check_expression("ex", z + 1, [z], lambda v: v[0])
        checks.check_expression("ex", z, [z], lambda v: v[0])
    checks.check_function("ex", ..., fixed_cross_entropy, cases)  # outside: prints only
    assert "not attempted" in capsys.readouterr().out.splitlines()[-1]


def test_test_cell_wrappers_raise_the_verdict_and_never_the_answer(capsys):
    import sympy as sp

    cases = checks.cross_entropy_cases(0)
    checks.assert_function("ex", _own_ce, fixed_cross_entropy, cases)
    assert capsys.readouterr().out.startswith("PASS")
    for candidate in (..., lambda **kw: _own_ce(**kw) * 1.01, lambda **kw: 1 / 0):
        with pytest.raises(AssertionError, match="ex"):
            checks.assert_function("ex", candidate, fixed_cross_entropy, cases)
    checks.assert_close("ex", 0.5, 0.5)
    assert "ex: correct" in capsys.readouterr().out
    for answer in (..., 0.6, [0.5, 0.5]):
        with pytest.raises(AssertionError) as err:
            checks.assert_close("ex", answer, 0.12345)
        assert "0.12345" not in str(err.value)
    z = sp.Symbol("z")
    checks.assert_expression("ex", 2 * z, [z], lambda v: 2 * v[0])
    for answer in (..., 3 * z, sp.Symbol("w")):
        with pytest.raises(AssertionError, match="ex"):
            checks.assert_expression("ex", answer, [z], lambda v: 2 * v[0])
    assert capsys.readouterr().out.count("PASS") == 1


def test_verdicts_print_the_tolerance_never_the_measured_error(capsys):
    """A verdict holds on every CPU and hints at nothing: no float error in it, passing or failing."""
    import sympy as sp

    z = sp.Symbol("z0")
    cases = checks.cross_entropy_cases(seed=0, dtype=torch.float64)
    checks.self_check("ex", [0.5 + 3e-7], torch.tensor([0.5]), atol=1e-6)
    checks.self_check("ex", [0.5 + 0.0123], torch.tensor([0.5]), atol=1e-6)
    checks.check_expression("ex", z + 1e-10, [z], lambda v: v[0])
    checks.check_expression("ex", z + 0.0123, [z], lambda v: v[0])
    checks.check_function("ex", lambda **kw: _own_ce(**kw) * (1 + 1e-9), fixed_cross_entropy, cases)
    checks.check_function("ex", lambda **kw: _own_ce(**kw) + 0.0123, fixed_cross_entropy, cases)
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["ex:", "ex:", "PASS", "FAIL", "PASS", "FAIL"], out
    assert "correct (within tolerance 1e-06)" in out[0] and "not yet (outside tolerance 1e-06)" in out[1]
    for line in out:
        assert not re.search(r"\d\.\de[-+]\d\d|0\.0123|1\.2e", line), line
    result = checks.compare_losses(lambda **kw: fixed_cross_entropy(**kw) + 0.25, fixed_cross_entropy, cases)
    assert "FAIL" in str(result) and "max value error 2.5e-01" in str(result)  # a bug's error is shown


def test_a_detached_second_input_fails_the_check(capsys):
    """Issue 24: the gradients are compared with respect to every floating-point argument, so an answer that
    detaches one (here the rejected reward of a pairwise loss, or the end logits of the QA loss) fails, while the
    faithful answer passes; the verdict names the argument, never a distance."""
    import torch.nn.functional as F

    import lossbook

    g = torch.Generator().manual_seed(0)
    pairs = [{"chosen": torch.randn(6, generator=g), "rejected": torch.randn(6, generator=g)} for _ in range(3)]

    def reference(chosen, rejected):
        return -F.logsigmoid(chosen - rejected).mean()

    def detached(chosen, rejected):
        return -F.logsigmoid(chosen - rejected.detach()).mean()

    assert checks.compare_losses(reference, reference, pairs).passed
    result = checks.compare_losses(detached, reference, pairs)
    assert not result.passed and result.grad_error == 0.0 and result.other_name == "rejected"
    assert "grad error w.r.t. rejected" in str(result)
    checks.check_function("ex", detached, reference, pairs)
    out = capsys.readouterr().out
    assert "FAIL" in out and "gradients with respect to rejected" in out and "error" not in out

    from lossbook.demos.question_answering import question_answering_cases

    cases = question_answering_cases(seed=0)

    def end_detached(start_logits, end_logits, start_positions, end_positions, **kw):
        return lossbook.question_answering_loss(start_logits, end_logits.detach(), start_positions, end_positions,
                                                **kw)

    assert checks.compare_losses(lossbook.question_answering_loss, lossbook.question_answering_loss, cases).passed
    assert not checks.compare_losses(end_detached, lossbook.question_answering_loss, cases).passed


def test_a_constant_answer_gets_a_verdict_not_a_traceback(capsys):
    cases = checks.cross_entropy_cases(seed=0)
    checks.check_function("ex", lambda **kw: torch.tensor(1.0), fixed_cross_entropy, cases)
    assert capsys.readouterr().out.startswith("FAIL  ex: values differ")


def test_the_reference_itself_or_a_wrapper_around_it_fails(capsys):
    """An exercise answered with the function it is checked against (or a call of it) is a FAIL, not a PASS;
    a candidate that computes the same thing itself passes."""
    import functools

    import torch.nn.functional as F

    from lossbook import fixed_cross_entropy
    from lossbook.checks import calls_reference, check_function

    cases = checks.cross_entropy_cases(seed=1)

    def wrapper(source, target, ignore_index):
        return 1.0 * fixed_cross_entropy(source, target, ignore_index=ignore_index)

    def own(source, target, ignore_index):
        return F.cross_entropy(source.float(), target, ignore_index=ignore_index)

    for answer in (fixed_cross_entropy, wrapper, functools.partial(fixed_cross_entropy, ignore_index=-100)):
        check_function("exercise", answer, fixed_cross_entropy, cases)
        out = capsys.readouterr().out
        assert "FAIL  exercise: your function is, or calls, the function it is checked against" in out
    check_function("exercise", own, fixed_cross_entropy, cases)
    assert capsys.readouterr().out.startswith("PASS  exercise")
    # a C function as the reference is found too; the profiler is removed afterwards
    assert calls_reference(print, torch.logsumexp, lambda: torch.logsumexp(torch.ones(3), 0))
    assert not calls_reference(own, torch.logsumexp, lambda: own(**cases[0]))
    assert sys.getprofile() is None
