"""Comparisons the chapters and the tests share: a candidate loss against a reference.

A check compares values *and* gradients on a list of cases; the bug zoo and
the exercises use the same function, so a mistake fails the same way in the
notebook and in CI.

A verdict prints what holds on every CPU: PASS with the tolerance it was held to, never the measured float
error (its last digits move with the kernels: 2.8e-17 on one CPU, 4.2e-17 on another). A failed parity check
prints the error to two digits (a bug's error is large, not noise); an exercise's verdict never prints a distance,
which would hint at the answer. ``CheckResult.value_error`` / ``grad_error`` keep the measured numbers.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import torch

__all__ = ["CheckResult", "compare_losses", "cross_entropy_cases", "self_check", "check_function", "calls_reference",
           "check_expression", "graded", "print_verdict",
           "assert_close", "assert_function", "assert_expression"]

_GRADED = [False]  # inside ``with graded():`` a failing verdict raises instead of only printing


@contextlib.contextmanager
def graded():
    """Make the self-checks in the block raise ``AssertionError(verdict)`` when they do not pass.

    An exercise's autograded test cell (nbgrader) wraps its check in ``with lossbook.checks.graded():`` so a wrong,
    missing or crashing answer is an error (0 points) while the printed verdict stays the same; the message is the
    verdict, which never contains the answer.  Outside the block the checks only print, as before.
    """
    before = _GRADED[0]
    _GRADED[0] = True
    try:
        yield
    finally:
        _GRADED[0] = before


def print_verdict(text: str, passed: bool) -> None:
    """Print an exercise's verdict; inside :func:`graded`, raise ``AssertionError(text)`` when it did not pass."""
    print(text)
    if _GRADED[0] and not passed:
        raise AssertionError(text)


@dataclass
class CheckResult:
    name: str
    value_error: float  # max |candidate - reference| over cases (inf when one is not finite)
    grad_error: float  # max |d candidate / d input - d reference / d input|, input: the first float argument
    cases: int
    atol: float
    other_grad_error: float = 0.0  # the same for every other floating-point tensor argument
    other_name: str = ""  # the argument where other_grad_error was found

    @property
    def passed(self) -> bool:
        return max(self.value_error, self.grad_error, self.other_grad_error) <= self.atol

    def __str__(self) -> str:
        if self.passed:
            return f"PASS  {self.name:<28} values and gradients within atol {self.atol:g} over {self.cases} cases"
        other = (f", grad error w.r.t. {self.other_name} {_fmt(self.other_grad_error)}"
                 if self.other_grad_error > self.atol else "")
        return (
            f"FAIL  {self.name:<28} max value error {_fmt(self.value_error)}, "
            f"max grad error {_fmt(self.grad_error)}{other} over {self.cases} cases (atol {self.atol:g})"
        )

    __repr__ = __str__


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else ("nan" if math.isnan(x) else f"{x:.1e}")


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|; inf when shapes differ or a non-finite entry (nan, inf) is not matched exactly."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return math.inf
    finite = torch.isfinite(a) & torch.isfinite(b)
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    if not (finite | same).all():
        return math.inf
    diff = (a - b)[finite].abs()
    return float(diff.max()) if diff.numel() else 0.0


def compare_losses(candidate, reference, cases, *, atol: float = 1e-6, name: str | None = None) -> CheckResult:
    """Run ``candidate(**case)`` and ``reference(**case)`` on every case; compare values and gradients.

    The gradients are taken with respect to **every** floating-point tensor argument of the case (the loss is
    summed if it is not a scalar), so an answer that detaches one input (a reference log-prob, the end logits, a
    rejected reward) fails.  ``grad_error`` is the error of the first such argument (the logits, usually) and
    ``other_grad_error`` the largest over the others.  A loss that does not depend on an argument has a zero
    gradient there; a result that requires no gradient at all has zero gradients everywhere.
    """
    value_err, grad_err, other_err, other_name = 0.0, 0.0, 0.0, ""
    for case in cases:
        floats = [k for k, v in case.items() if torch.is_tensor(v) and v.is_floating_point()]
        outs, grads = [], []
        for fn in (candidate, reference):
            args = dict(case)
            leaves = {k: args[k].detach().clone().requires_grad_(True) for k in floats}
            args.update(leaves)
            out = fn(**args)
            if torch.is_tensor(out) and out.requires_grad:
                out.sum().backward()
            outs.append(out)
            grads.append({k: leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
                          for k, leaf in leaves.items()})
        value_err = max(value_err, _error(*outs))
        for i, key in enumerate(floats):
            err = _error(grads[0][key], grads[1][key])
            if i == 0:
                grad_err = max(grad_err, err)
            elif err > other_err:
                other_err, other_name = err, key
    return CheckResult(name or getattr(candidate, "__name__", "candidate"), value_err, grad_err, len(cases), atol,
                       other_err, other_name)


def cross_entropy_cases(seed: int = 0, *, dtype=torch.float32, extreme: bool = True) -> list[dict]:
    """Inputs for ``fixed_cross_entropy``-shaped functions: (source, target, ignore_index).

    Uneven ignore patterns, batch 1, a single class row, and (``extreme``) logits near +-100.
    """
    g = torch.Generator().manual_seed(seed)
    cases = []
    for items, classes, ignored in [(8, 5, 3), (1, 7, 0), (12, 3, 8), (16, 11, 1)]:
        source = (3 * torch.randn(items, classes, generator=g)).to(dtype)
        target = torch.randint(0, classes, (items,), generator=g)
        target[torch.randperm(items, generator=g)[:ignored]] = -100
        cases.append({"source": source, "target": target, "ignore_index": -100})
    if extreme:
        source = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0]], dtype=dtype)
        cases.append({"source": source, "target": torch.tensor([1, 0]), "ignore_index": -100})
    return cases


def self_check(name: str, answer, expected, *, atol: float = 1e-4) -> None:
    """An exercise's self-check: prints whether the answer is right (returns nothing, so a cell shows only that).

    ``answer`` may be ``...`` (not attempted yet), a number, or a tensor.
    """
    if answer is Ellipsis:
        return print_verdict(f"{name}: not attempted yet (replace ... with your answer)", False)
    got = torch.as_tensor(answer, dtype=torch.float64)
    want = torch.as_tensor(expected, dtype=torch.float64)
    if got.shape != want.shape:
        return print_verdict(f"{name}: wrong shape {list(got.shape)}, expected {list(want.shape)}", False)
    err = float((got - want).abs().max()) if want.numel() else 0.0
    verdict = "correct (within" if err <= atol else "not yet (outside"
    print_verdict(f"{name}: {verdict} tolerance {atol:g})", err <= atol)


def check_function(name: str, candidate, reference, cases, *, atol: float = 1e-5) -> None:
    """An exercise's self-check for a function: ``...`` means not attempted yet."""
    if candidate is Ellipsis:
        return print_verdict(f"{name}: not attempted yet (replace ... with your function)", False)
    if calls_reference(candidate, reference, lambda: [candidate(**case) for case in cases]):
        return print_verdict(f"FAIL  {name}: your function is, or calls, the function it is checked against "
                             f"({getattr(reference, '__name__', 'the reference')}): write the computation", False)
    try:
        result = compare_losses(candidate, reference, cases, atol=atol, name=name)
    except Exception as err:  # a reader's function that crashes gets a verdict, not a traceback
        keywords = ", ".join(cases[0]) if cases else ""
        return print_verdict(f"FAIL  {name}: your function raised {type(err).__name__}: {err} (it is called with the "
                       f"keyword arguments {keywords})", False)
    if not result.passed:  # no distance: it would hint at the answer
        what = "values" if result.value_error > atol else (
            "gradients" if result.grad_error > atol else f"gradients with respect to {result.other_name}")
        return print_verdict(f"FAIL  {name}: {what} differ from the reference beyond atol {atol:g} "
                             f"(over {result.cases} cases)", False)
    print_verdict(str(result), result.passed)


def calls_reference(candidate, reference, run) -> bool:
    """Is ``candidate`` the reference itself, or does ``run()`` (which calls the candidate) call the reference?
    An exercise answered with ``my_loss = lossbook.causal_lm_loss``, or a wrapper around it, passes every
    comparison; the checks give it a FAIL instead."""
    import functools
    import sys

    def unwrap(fn):
        while isinstance(fn, functools.partial):
            fn = fn.func
        return getattr(fn, "__wrapped__", fn)

    target = unwrap(reference)
    if unwrap(candidate) is target:
        return True
    code = getattr(target, "__code__", None)
    found = [False]

    def profile(frame, event, arg):
        if (event == "call" and code is not None and frame.f_code is code) or (event == "c_call" and arg is target):
            found[0] = True

    before = sys.getprofile()
    sys.setprofile(profile)
    try:
        with torch.no_grad():
            run()
    except Exception:  # noqa: BLE001 - a crash is reported by the comparison that follows
        pass
    finally:
        sys.setprofile(before)
    return found[0]


def check_expression(name: str, expression, symbols, reference, *, points: int = 5, seed: int = 0,
                     scale: float = 3.0, atol: float = 1e-8) -> None:
    """An exercise's self-check for a sympy derivation: prints PASS or FAIL, never the answer or its distance.

    ``expression`` (a sympy expression or Matrix, or ``...`` for not attempted yet) is evaluated at
    ``points`` seeded random points (normal, times ``scale``) of ``symbols`` and compared with
    ``reference(values)``, where ``values`` is a float64 tensor with one entry per symbol (an independent
    computation, e.g. autograd).  Symbols are matched by *name*, so a reader's own ``sp.Symbol("z0")``
    (with or without assumptions) is accepted; a symbol the check does not know is a FAIL that names it.
    """
    if expression is Ellipsis:
        return print_verdict(f"{name}: not attempted yet (replace ... with your sympy expression)", False)
    problem = None
    try:
        import numpy as np
        import sympy as sp

        expression = sp.sympify(expression)
        by_name = {s.name: s for s in expression.free_symbols}
        unknown = sorted(set(by_name) - {s.name for s in symbols})
        if unknown:
            problem = (f"FAIL  {name}: your expression uses symbols the check does not know: {unknown} "
                       f"(expected only {[s.name for s in symbols]})")
    except Exception as err:  # a reader's expression that cannot be evaluated gets a verdict, not a traceback
        problem = f"FAIL  {name}: evaluating your expression raised {type(err).__name__}: {err}"
    if problem:
        return print_verdict(problem, False)
    try:
        args = [by_name.get(s.name, s) for s in symbols]
        fn = sp.lambdify(args, expression, "numpy")
        g = torch.Generator().manual_seed(seed)
        worst = 0.0
        for _ in range(points):
            values = scale * torch.randn(len(symbols), generator=g, dtype=torch.float64)
            got = torch.as_tensor(np.array(fn(*values.tolist()), dtype=np.float64))
            want = torch.as_tensor(reference(values), dtype=torch.float64)
            if got.shape != want.shape:
                got = got.reshape(want.shape) if got.numel() == want.numel() else got
            worst = max(worst, _error(got, want))
    except Exception as err:  # a reader's expression that cannot be evaluated gets a verdict, not a traceback
        return print_verdict(f"FAIL  {name}: evaluating your expression raised {type(err).__name__}: {err}", False)
    verdict = "PASS  {}: agrees with" if worst <= atol else "FAIL  {}: differs from"
    print_verdict(f"{verdict.format(name)} the reference at {points} random points (atol {atol:g})", worst <= atol)


# Autograded test cells (nbgrader): the same checks, raising instead of only printing.  A passing answer
# prints the verdict; a wrong or missing one raises AssertionError whose message is the verdict (never the
# answer), so the grader gives the cell 0 points.

def _verdict(check, *args, **kwargs) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        check(*args, **kwargs)
    return out.getvalue().strip()


def _require(verdict: str, passed: bool) -> None:
    if not passed:
        raise AssertionError(verdict)
    print(verdict)


def assert_close(name: str, answer, expected, *, atol: float = 1e-4) -> None:
    """``self_check`` for a test cell: raises AssertionError with the verdict unless the answer is correct."""
    verdict = _verdict(self_check, name, answer, expected, atol=atol)
    _require(verdict, verdict.startswith(f"{name}: correct "))


def assert_function(name: str, candidate, reference, cases, *, atol: float = 1e-5) -> None:
    """``check_function`` for a test cell: raises AssertionError with the verdict unless it is a PASS."""
    verdict = _verdict(check_function, name, candidate, reference, cases, atol=atol)
    _require(verdict, verdict.startswith("PASS "))


def assert_expression(name: str, expression, symbols, reference, **kwargs) -> None:
    """``check_expression`` for a test cell: raises AssertionError with the verdict unless it is a PASS."""
    verdict = _verdict(check_expression, name, expression, symbols, reference, **kwargs)
    _require(verdict, verdict.startswith("PASS "))
