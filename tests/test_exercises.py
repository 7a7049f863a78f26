"""Every exercise's check is tested itself (issue 24): the instructor's solution passes it, the blank student
answer fails it, and plausible wrong answers fail it: a mutation test of the checks.

Each chapter runs once in a Jupyter kernel, top to bottom (the instructor edition), as a reader would run it.  At
each exercise's check cell, before the real check runs, every candidate answer is executed in place of the
solution and followed by the *visible* part of the check (hidden tests removed: the student edition's check must
give a verdict on its own):

* the blank answer (the solution block removed, as in the student edition) must fail;
* each wrong answer of ``tests/mutants/chNN.py`` (``MUTANTS = {"ex1": [(what, code), ...]}``: a detached term, a
  constant, the mean of means, an off-by-one shift, ...) must fail, with lossbook's ``AssertionError`` (a verdict),
  not a crash, and the verdict must not print a distance;
* then the solution is executed again and the chapter goes on, so the real check cell must pass.

Chapters whose mutants are written are in ``MUTATED``; every exercise of those has at least two wrong answers.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MUTANT_DIR = Path(__file__).resolve().parent / "mutants"
# chapters whose exercises have wrong answers on file
MUTATED = ("00", "01", "02", "03", "04", "05", "06", "11", "12", "13", "14", "15")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[ \t]*\n?", re.S | re.M)
# a verdict that prints how far off an answer is ("max error 6.6e-01", "off by 0.3") tells the answer in two tries
# (not "RuntimeError: 0D target ...": an exception's name is not a distance)
DISTANCE = re.compile(r"(max(imum)? (abs(olute)? |relative )?error|error of|distance|off by|differs? by)\W{0,3}"
                      r"[-+]?\d", re.I)


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def blank(source: str) -> str:
    """The student edition of a solution cell: the lines between the solution markers removed."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def solution(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.strip() not in (BEGIN, END))


def visible(check_source: str) -> str:
    """A check cell as the student edition shows it: hidden tests removed."""
    return HIDDEN.sub("", check_source)


def mutants(chapter: str) -> dict[str, list[tuple[str, str]]]:
    path = MUTANT_DIR / f"ch{chapter}.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location(f"mutants_ch{chapter}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MUTANTS


def exercises(nb) -> dict[str, tuple[int, int]]:
    """exercise ("ex1") -> (index of its solution cell, index of its check cell)."""
    found: dict[str, list[int]] = {}
    for i, cell in enumerate(nb.cells):
        grade_id = _meta(cell).get("grade_id", "")
        m = re.fullmatch(r"ch\d\d-(ex\d+)-(solution|check)", grade_id)
        if m:
            found.setdefault(m.group(1), [None, None])[m.group(2) == "check"] = i
    return {ex: tuple(ij) for ex, ij in found.items()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_mutants_are_on_file_for_every_exercise(path):
    chapter = path.name[:2]
    nb = nbformat.read(path, as_version=4)
    found = exercises(nb)
    assert found, f"{path.name} has no exercise"
    for ex, (sol, check) in found.items():
        assert sol is not None and check is not None and sol < check, (path.name, ex)
        assert BEGIN in nb.cells[sol].source and END in nb.cells[sol].source, (path.name, ex)
    if chapter in MUTATED:
        on_file = mutants(chapter)
        assert set(on_file) == set(found), f"{path.name}: mutants for {sorted(on_file)}, exercises {sorted(found)}"
        short = {ex: len(m) for ex, m in on_file.items() if len(m) < 2}
        assert not short, f"{path.name}: exercises with fewer than two wrong answers: {short}"


class _Kernel:
    """One chapter's kernel: cells run in order; ``run(source)`` returns (ename or None, printed text)."""

    def __init__(self, nb):
        from nbclient import NotebookClient

        # a copy: nbclient stores each executed cell at its index in the client's notebook
        self.client = NotebookClient(copy.deepcopy(nb), timeout=600, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})

    def run(self, source: str, index: int):
        cell = nbformat.v4.new_code_cell(source)
        self.client.execute_cell(cell, index)
        text, ename = "", None
        for out in cell.outputs:
            if out.output_type == "stream":
                text += out.text
            elif out.output_type == "error":
                ename = out.ename
                text += f"{out.ename}: {out.evalue}"
            elif "text/plain" in out.get("data", {}):
                text += out["data"]["text/plain"]
        return ename, text


def mutation_problems(nb, on_file: dict, name: str = "notebook") -> list[str]:
    """Run ``nb`` top to bottom in a kernel, trying the blank answer and ``on_file``'s wrong answers at each
    exercise's check; returns what went wrong (an empty list when every check did its job)."""
    found = exercises(nb)
    checks = {check: (ex, sol) for ex, (sol, check) in found.items()}
    last = max(checks)
    problems = []
    kernel = _Kernel(nb)
    with kernel.client.setup_kernel():
        for i, cell in enumerate(nb.cells[: last + 1]):
            if cell.cell_type != "code":
                continue
            if i in checks:
                ex, sol = checks[i]
                candidates = [("the blank answer", blank(nb.cells[sol].source)), *on_file.get(ex, [])]
                for what, code in candidates:
                    ename, _ = kernel.run(code, sol)
                    if ename is not None:
                        problems.append(f"{ex}, {what}: the answer itself raised {ename}")
                        continue
                    ename, text = kernel.run(visible(cell.source), i)
                    if ename is None:
                        problems.append(f"{ex}, {what}: the visible check PASSED a wrong answer")
                    elif ename != "AssertionError":
                        problems.append(f"{ex}, {what}: the check crashed ({ename}) instead of a verdict")
                    elif DISTANCE.search(text):
                        problems.append(f"{ex}, {what}: the verdict prints a distance: {text.strip()[:120]}")
                ename, _ = kernel.run(solution(nb.cells[sol].source), sol)  # the solution back in place
                assert ename is None, f"{name} {ex}: the instructor's solution raised {ename}"
                ename, text = kernel.run(visible(cell.source), i)
                if ename is not None:
                    problems.append(f"{ex}: the visible check FAILED the instructor's solution: {text[-200:]}")
            ename, text = kernel.run(solution(cell.source) if _meta(cell).get("solution") else cell.source, i)
            assert ename is None, f"{name} cell {i} raised {ename}: {text[-300:]}"
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_check_passes_the_solution_and_fails_wrong_answers(path, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("LOSSBOOK_DEVICE", os.environ.get("LOSSBOOK_DEVICE", "cpu"))
    nb = nbformat.read(path, as_version=4)
    problems = mutation_problems(nb, mutants(path.name[:2]), path.name)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_the_mutation_test_catches_a_check_that_accepts_wrong_answers():
    """The runner itself can fail: on a two-exercise notebook, a check that looks only at the shape passes a
    wrong answer, a check that crashes on one gives no verdict, a check that prints the distance gives the
    answer away, and a check that rejects the instructor's solution is caught too."""
    def cell(source, grade_id, solution):
        c = nbformat.v4.new_code_cell(source)
        c.metadata["nbgrader"] = {"grade_id": grade_id, "solution": solution, "grade": not solution}
        return c

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import lossbook"),
        cell(f"answer_1 = ...\n{BEGIN}\nanswer_1 = [1.0, 2.0]\n{END}", "ch99-ex1-solution", True),
        cell("with lossbook.checks.graded():\n    assert answer_1 is not ..., 'not attempted'\n"
             "    lossbook.checks.print_verdict('ex1: ' + ('right' if len(answer_1) == 2 else 'wrong'),"
             " len(answer_1) == 2)", "ch99-ex1-check", False),
        cell(f"answer_2 = ...\n{BEGIN}\nanswer_2 = 0.5\n{END}", "ch99-ex2-solution", True),
        cell("with lossbook.checks.graded():\n    assert answer_2 is not ..., 'not attempted'\n"
             "    assert abs(answer_2 - 0.5) < 1e-9, f'ex2: wrong, max error {abs(answer_2 - 0.5):.2f}'",
             "ch99-ex2-check", False),
    ]
    wrong = {"ex1": [("same length, wrong values", "answer_1 = [0.0, 0.0]"),
                     ("not a list", "answer_1 = 3")],
             "ex2": [("off by a little", "answer_2 = 0.4")]}
    problems = mutation_problems(nb, wrong)
    assert "ex1, same length, wrong values: the visible check PASSED a wrong answer" in problems
    assert "ex1, not a list: the check crashed (TypeError) instead of a verdict" in problems
    assert any(p.startswith("ex2, off by a little: the verdict prints a distance") for p in problems)
    assert len(problems) == 3, problems
