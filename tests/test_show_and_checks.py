import math

import pytest
import torch

from lossbook import checks, fixed_cross_entropy, show_source
from lossbook.show import source_location


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
    checks.check_function("ex", fixed_cross_entropy, fixed_cross_entropy, cases)
    assert capsys.readouterr().out.startswith("PASS")
    checks.check_function("ex", lambda **kw: fixed_cross_entropy(**kw) + 1, fixed_cross_entropy, cases)
    assert capsys.readouterr().out.startswith("FAIL")
    checks.check_function("ex", lambda logits, labels: logits.sum(), fixed_cross_entropy, cases)  # other names
    out = capsys.readouterr().out
    assert out.startswith("FAIL  ex: your function raised TypeError") and "source, target, ignore_index" in out


def test_error_matches_non_finite_entries_exactly():
    inf = float("inf")
    assert checks._error(torch.tensor([inf, 1.0]), torch.tensor([inf, 1.5])) == 0.5
    assert math.isinf(checks._error(torch.tensor([inf]), torch.tensor([-inf])))
    assert math.isinf(checks._error(torch.tensor([1.0, 2.0]), torch.tensor([1.0])))
