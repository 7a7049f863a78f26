"""Stored notebooks are clean, executed top to bottom, and keep the chapter contract's shape.

nbval (pytest over notebooks/) re-executes them and compares the cells marked
"# NBVAL_CHECK_OUTPUT"; these tests check what nbval does not.
"""

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest
import yaml

import lossbook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CONTRACT = ["Derive", "Implement", "Check", "See", "Train", "Verify", "Practise"]
VOLATILE = re.compile(r"(/root/|/home/|/tmp/|/work/|/Users/|site-packages|\b0x[0-9a-fA-F]{6,})")
NOTEBOOK_METADATA = {"kernelspec", "language_info", "widgets"}
CELL_METADATA = {"tags", "editable", "slideshow", "jupyter", "nbgrader"}  # nbgrader: the exercises (issue 16)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _python(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _lossbook_names() -> set[str]:
    """Every public name of lossbook and of each of its modules, chapter submodules included."""
    names = set(lossbook.__all__)
    for info in pkgutil.walk_packages(lossbook.__path__, "lossbook."):
        module = importlib.import_module(info.name)
        names |= {n for n in getattr(module, "__all__", []) if not inspect.ismodule(getattr(module, n, None))}
    return {n for n in names if not inspect.ismodule(getattr(lossbook, n, None))}


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def nb(request):
    notebook = nbformat.read(request.param, as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_executed_top_to_bottom_in_one_run(nb):
    counts = [c.execution_count for c in _code(nb)]
    assert counts == list(range(1, len(counts) + 1)), "re-run with scripts/execute_notebooks.py"


def _text_of(output) -> str:
    """An output as text, images left out (base64 can spell anything)."""
    kept = {k: v for k, v in output.get("data", {}).items() if not k.startswith("image/")}
    return str({**output, "data": kept})


def test_no_errors_warnings_paths_or_addresses(nb):
    for i, cell in enumerate(_code(nb)):
        for out in cell.outputs:
            assert out.output_type != "error", f"code cell {i} stored an error: {out.get('ename')}"
            if out.output_type == "stream":
                assert out.name == "stdout" or "Warning" not in out.text, f"code cell {i} stored a warning"
            match = VOLATILE.search(_text_of(out))
            assert match is None, f"code cell {i} output holds {match.group(0)!r}"
    match = VOLATILE.search(str(nb.metadata))  # the embedded widget state too
    assert match is None, f"notebook metadata holds {match.group(0)!r}"


def test_no_volatile_metadata(nb):
    assert set(nb.metadata) <= NOTEBOOK_METADATA
    for cell in nb.cells:
        assert set(cell.metadata) <= CELL_METADATA, set(cell.metadata) - CELL_METADATA


def test_first_code_cell_sets_up_the_chapter(nb):
    first = _code(nb)[0].source
    for needed in ("# NBVAL_IGNORE_OUTPUT", "import lossbook", "pick_device()", "seed_everything("):
        assert needed in first


def test_lesson_cells_are_checked_and_have_outputs(nb):
    checked = [c for c in _code(nb) if "# NBVAL_CHECK_OUTPUT" in c.source]
    assert len(checked) >= 3
    assert all(c.outputs for c in checked)


FLOAT_NOISE = re.compile(r"\b\d\.\de-(0[5-9]|[1-9]\d)\b")  # 2.8e-17: rounding-level, its digits move with the CPU
LINE_NUMBER = re.compile(r"\w\.py:\d+")                    # trainer.py:2375: moves with every upstream release


def _checked_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs) + "".join(
        o.get("data", {}).get("text/plain", "") for o in cell.outputs if "data" in o)


def test_checked_outputs_hold_on_every_cpu(nb):
    """A checked output prints verdicts, exact counts and guaranteed digits: no rounding-level error magnitudes
    (a verdict against the tolerance instead) and no upstream line numbers (the function and the quoted line)."""
    for cell in _code(nb):
        if "# NBVAL_CHECK_OUTPUT" in cell.source:
            text = _checked_text(cell)
            assert not FLOAT_NOISE.search(text), f"float noise {FLOAT_NOISE.search(text).group()} in {text[:300]}"
            assert not LINE_NUMBER.search(text), f"an upstream line number in {text[:300]}"


def test_the_noise_patterns_catch_what_they_name():
    assert FLOAT_NOISE.search("max grad error 4.2e-17 over 5 cases") and LINE_NUMBER.search("trainer.py:2375: else")
    assert not FLOAT_NOISE.search("FAIL  mean_of_means max value error 1.7e-01 (atol 1e-06)")


def test_notebooks_never_redefine_lossbook(nb):
    names = _lossbook_names()
    assert "fixed_cross_entropy" in names and "LogitExplorer" in names
    for cell in _code(nb):
        for node in ast.walk(ast.parse(_python(cell.source))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in names, f"notebook redefines lossbook's {node.name}"
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assert target.id not in names, f"notebook rebinds lossbook's {target.id}"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.name.startswith("00")], ids=lambda p: p.name)
def test_chapter_has_the_seven_parts_in_order(path):
    nb = nbformat.read(path, as_version=4)
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    found = [part for h in headings for part in CONTRACT if part in h]
    assert found == CONTRACT, headings


def test_book_toc_lists_every_notebook_in_order():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [c["file"] for c in toc["chapters"] if c["file"].startswith("notebooks/")]  # + book/instructors
    assert files == [f"notebooks/{p.stem}" for p in NOTEBOOKS]


FITS_THE_PAGE = ("00_", "01_", "02_")  # chapters whose code cells are wrapped (issue 14); extend as chapters are


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name.startswith(FITS_THE_PAGE)], ids=lambda p: p.name)
def test_code_lines_fit_the_page(path):
    """The built book shows code cells at about 100 characters: longer lines scroll horizontally."""
    nb = nbformat.read(path, as_version=4)
    long = [(i, len(line)) for i, c in enumerate(_code(nb)) for line in c.source.splitlines() if len(line) > 100]
    assert not long, f"code cell (index, line length) over 100 characters: {long}"


RENDERED_FITS = ("0", "1")  # every chapter: the small lossbook (issue 23)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name.startswith(RENDERED_FITS)], ids=lambda p: p.name)
def test_rendered_code_fits_the_page(path):
    """What ``show_source`` renders (the stored output the book shows) has lines of at most 100 characters: the
    book's column clips longer ones, and a reader should not scroll to see a loss."""
    nb = nbformat.read(path, as_version=4)
    long = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "show_source(" not in cell.source:
            continue
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/markdown", "")
            long += [(i, len(line), line.strip()[:40]) for line in text.splitlines() if len(line) > 100]
    assert not long, f"rendered lines over 100 characters (cell, length, start): {long}"


def _rendered(nb) -> list[tuple[int, str, str]]:
    """(cell index, the expression, the stored Markdown) of every cell that is one ``show_source(...)`` call."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        calls = [n for n in ast.walk(ast.parse(_python(cell.source))) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "show_source" and len(n.args) == 1]
        if len(calls) == 1:
            text = "".join(o.get("data", {}).get("text/markdown", "") for o in cell.get("outputs", []))
            out.append((i, ast.unparse(calls[0].args[0]), text))
    return out


def test_rendered_code_is_the_code_that_runs(nb):
    """Every stored ``show_source`` output (what the book shows) equals the package's current source: a chapter
    re-executed before its function changed would show a reader code that no longer runs.  The names are
    resolved through the chapter's own import statements."""
    from lossbook import show_source

    namespace: dict = {}
    for cell in _code(nb):
        for node in ast.parse(_python(cell.source)).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                exec(compile(ast.Module([node], []), "<imports>", "exec"), namespace)  # noqa: S102
    stale = []
    for i, expression, stored in _rendered(nb):
        obj = eval(expression, namespace)  # noqa: S307 (a name or attribute from the chapter's imports)
        if stored != show_source(obj).data:
            stale.append((i, expression))
    assert not stale, f"stored renders older than the code (cell, object); re-execute the notebook: {stale}"


def test_exercises_follow_the_nbgrader_convention(nb):
    """Issue 16: a solution cell with a solution region, then its locked test cell with points; ids unique."""
    graded = [(i, c) for i, c in enumerate(nb.cells) if "nbgrader" in c.metadata]
    ids = [c.metadata.nbgrader.grade_id for _, c in graded]
    assert len(ids) == len(set(ids)), ids
    if graded:
        headings = [line.strip() for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()]
        assert not {"## Solutions", "### Solutions"} & set(headings), "the solutions live in the solution regions"
    for i, cell in graded:
        meta = cell.metadata.nbgrader
        assert meta.schema_version == 3 and cell.cell_type == "code", meta
        if meta.solution:
            assert not meta.grade and not meta.locked and meta.grade_id.endswith("-solution")
            lines = cell.source.splitlines()
            assert "### BEGIN SOLUTION" in lines and "### END SOLUTION" in lines, cell.source
            assert lines.index("### BEGIN SOLUTION") < lines.index("### END SOLUTION")
            test = nb.cells[i + 1]
            assert test.metadata.nbgrader.grade_id == meta.grade_id.replace("-solution", "-check")
        else:
            assert meta.grade and meta.locked and meta.points in (1, 2) and meta.grade_id.endswith("-check"), meta
            assert "BEGIN SOLUTION" not in cell.source
    # nbgrader's ClearSolutions reads a marker anywhere in any cell (markdown too) as the start of a region
    for cell in nb.cells:
        if "nbgrader" not in cell.metadata:
            assert "BEGIN SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source, cell.source


def test_solutions_are_collapsed_in_the_book(nb):
    """Issue 24: the HTML book shows every exercise's solution collapsed (myst-nb's ``hide-input`` tag: a toggle
    the reader opens), so a reader can try first; the student edition removes solutions altogether."""
    open_solutions = [i for i, c in enumerate(nb.cells)
                      if c.get("metadata", {}).get("nbgrader", {}).get("solution") and c.cell_type == "code"
                      and "hide-input" not in c.metadata.get("tags", [])]
    assert not open_solutions, f"solution cells without the hide-input tag: {open_solutions}"
