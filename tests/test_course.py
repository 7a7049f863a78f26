"""The course kit (scripts/course.py, issue 16): the student edition and autograding with nbgrader.

Kept fast: the properties of the whole book are checked statically (every chapter's student edition is built, in
about a second, and searched for solution text; the exercise metadata follows the convention); only chapter 00
(the smallest, about 10 s to execute) is executed: its student edition up to the first exercise, then graded as
four submissions (the solutions filled back in; a blank one; one wrong answer whose student also deleted
one test cell and edited the other; a file that is not a notebook); and once more by nbgrader's own command line
(generate_assignment, autograde of a solved and a blank submission, export), as instructors run it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SMALL = ROOT / "notebooks" / "00_how_to_read_this_book.ipynb"  # the chapter that is executed and graded
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
# every chapter is in the nbgrader convention (issue 16)
CONVERTED = {p.name[:2] for p in NOTEBOOKS}


def _course():
    require("nbgrader", "needed for the course kit (student edition, autograding)", "pip install -e '.[course]'")
    spec = importlib.util.spec_from_file_location("course", ROOT / "scripts" / "course.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["course"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def course():
    return _course()


def _read(path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _regions(source: str, begin: str, end: str) -> list[str]:
    lines, out, inside = source.split("\n"), [], False
    for line in lines:
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            out.append(line)
    return out


def _graded_chapters():
    return [p for p in NOTEBOOKS if any(_meta(c) for c in json.loads(p.read_text())["cells"])]


def test_converted_chapters_are_graded_and_have_no_solutions_section():
    graded = {p.name[:2] for p in _graded_chapters()}
    assert CONVERTED <= graded, f"not yet in the nbgrader convention: {sorted(CONVERTED - graded)}"
    for path in _graded_chapters():
        headings = [c for c in _read(path).cells if c.cell_type == "markdown" and re.search(r"^#+ Solutions",
                                                                                            c.source, re.M)]
        assert not headings, f"{path.name}: the Solutions section now lives in the solution regions"


@pytest.mark.parametrize("path", _graded_chapters(), ids=lambda p: p.name[:2])
def test_exercise_metadata_follows_the_convention(path):
    nb = _read(path)
    chapter = path.name[:2]
    cells = nb.cells
    for i, cell in enumerate(cells):
        meta = _meta(cell)
        if not meta:
            continue
        assert meta["schema_version"] == 3 and not meta["task"], (path.name, i)
        if meta["solution"]:
            assert cell.cell_type == "code" and not meta["grade"] and not meta["locked"]
            assert re.fullmatch(rf"ch{chapter}-ex\d+-solution", meta["grade_id"]), meta["grade_id"]
            assert cell.source.count("### BEGIN SOLUTION") == 1 == cell.source.count("### END SOLUTION")
            test = cells[i + 1]  # the test cell comes right after its solution cell
            assert _meta(test).get("grade_id") == meta["grade_id"].replace("-solution", "-check"), (path.name, i)
        else:
            assert meta["grade"] and meta["locked"] and cell.cell_type == "code", (path.name, i)
            assert meta["points"] in (1, 2), (path.name, meta)
            assert re.fullmatch(rf"ch{chapter}-ex\d+-check", meta["grade_id"]), meta["grade_id"]
            assert _meta(cells[i - 1]).get("grade_id") == meta["grade_id"].replace("-check", "-solution")
            raising = ("lossbook.checks.graded()", "assert ", "assert_function(", "assert_close(", "assert_expression(")
            assert any(r in cell.source for r in raising), (
                f"{path.name} {meta['grade_id']}: the check must raise on a wrong answer")


def test_grade_ids_are_unique_across_the_book():
    ids = [_meta(c)["grade_id"] for p in NOTEBOOKS for c in _read(p).cells if _meta(c)]
    assert ids and len(ids) == len(set(ids))


def test_no_solution_markers_outside_graded_cells():
    for path in NOTEBOOKS:
        for cell in _read(path).cells:
            if any(m in cell.source for m in MARKERS):
                meta = _meta(cell)
                assert meta.get("solution") or meta.get("grade"), f"{path.name}: marker in an ungraded cell"


def test_student_edition_has_no_solution_text(course, tmp_path):
    rows = course.build_student(NOTEBOOKS, tmp_path)
    assert [r[0] for r in rows] == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        teacher = _read(path)
        student = _read(tmp_path / path.name)
        text = "\n".join(c.source for c in student.cells)
        for marker in MARKERS:
            assert marker not in text, f"{path.name}: {marker} left in the student edition"
        hidden, outside = set(), set()  # lines inside solution / hidden-test regions, and all the others
        for cell in teacher.cells:
            inside = _regions(cell.source, "BEGIN SOLUTION", "END SOLUTION")
            inside += _regions(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
            hidden |= {line.strip() for line in inside if line.strip()}
            outside |= {line.strip() for line in cell.source.split("\n")} - {line.strip() for line in inside}
        student_lines = {line.strip() for c in student.cells for line in c.source.split("\n")}
        leaked = (hidden - outside) & student_lines
        assert not leaked, f"{path.name}: solution lines left in the student edition: {sorted(leaked)}"
        assert hidden - outside or not hidden
        for cell in student.cells:
            assert cell.cell_type != "code" or (not cell.outputs and cell.execution_count is None)
            if _meta(cell).get("solution"):
                assert "raise NotImplementedError()" in cell.source
            if _meta(cell).get("grade"):
                assert cell.metadata["editable"] is False and cell.metadata["deletable"] is False
                assert _meta(cell)["checksum"]
        assert "widgets" not in student.metadata
        assert len(student.cells) == len(teacher.cells)
        n_teacher = [_meta(c)["grade_id"] for c in teacher.cells if _meta(c)]
        assert [_meta(c)["grade_id"] for c in student.cells if _meta(c)] == n_teacher


def test_student_edition_runs_up_to_the_first_exercise(course, tmp_path):
    """Chapter 00's student edition, cut before its first solution cell, executes without error."""
    from nbclient import NotebookClient

    student = course.student_notebook(_read(SMALL))
    first = next(i for i, c in enumerate(student.cells) if _meta(c).get("solution"))
    assert first > 0
    student.cells = student.cells[:first]
    NotebookClient(student, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(SMALL.parent)}}).execute()
    assert any(c.cell_type == "code" and c.outputs for c in student.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_student_chapter_runs_up_to_its_first_exercise_because_it_is_the_instructors(course, path):
    """Every chapter's student edition, up to its first solution cell, is the instructor edition's code cell for
    cell (sources equal, in order): the instructor edition runs end to end under nbval (tests/test_notebooks and
    the nbval run of notebooks/), so the student's part before the first exercise runs too.  Chapter 00's is also
    executed for real (the test above)."""
    teacher = _read(path)
    student = course.student_notebook(_read(path))
    first = next(i for i, c in enumerate(student.cells) if _meta(c).get("solution"))
    assert first > 0 and first == next(i for i, c in enumerate(teacher.cells) if _meta(c).get("solution"))
    assert [(c.cell_type, c.source) for c in student.cells[:first]] == [
        (c.cell_type, c.source) for c in teacher.cells[:first]]


def _fill(student, teacher, *, replace: dict[str, str] | None = None):
    """A submission: the student edition with each solution cell's source taken from the instructor edition."""
    answers = {_meta(c)["grade_id"]: c.source for c in teacher.cells if _meta(c).get("solution")}
    answers.update(replace or {})
    nb = copy.deepcopy(student)
    for cell in nb.cells:
        if _meta(cell).get("solution"):
            cell.source = answers[_meta(cell)["grade_id"]]
    return nb


def test_autograding_full_blank_wrong_and_broken_submissions(course, tmp_path):
    import nbformat

    teacher = _read(SMALL)
    student = course.student_notebook(teacher)
    exercises = course.exercises(teacher)
    assert len(exercises) >= 2
    ids = [e["grade_id"] for e in exercises]
    points = {e["grade_id"]: e["points"] for e in exercises}
    wrong_id = ids[-1]  # the last exercise answered with its bug-zoo mistake: log(softmax(z)), which underflows
    wrong_src = "my_log_softmax = ...\nmy_log_softmax = lambda z: torch.log(torch.softmax(z, -1))"
    (tmp_path / "full").mkdir()
    nbformat.write(_fill(student, teacher), tmp_path / "full" / SMALL.name)
    nbformat.write(student, tmp_path / f"blank__{SMALL.stem[:2]}.ipynb")  # the other layout, chapter by number
    wrong = _fill(student, teacher, replace={wrong_id.replace("check", "solution"): wrong_src})
    checks = [c for c in wrong.cells if _meta(c).get("grade")]  # and tampers: deletes one test cell, edits the
    wrong.cells.remove(checks[0])                                 # other to pass; both come back from the
    checks[-1].source = "pass"                                    # instructor edition
    nbformat.write(wrong, tmp_path / f"wrong__{SMALL.stem}.ipynb")
    (tmp_path / f"broken__{SMALL.stem}.ipynb").write_text("{ this is not a notebook")
    (tmp_path / "notes.txt").write_text("not a submission")

    columns, rows, maxima = course.grade_folder(tmp_path, timeout=120, log=lambda *_: None)
    by = {r["student"]: r for r in rows}
    assert columns == ids and maxima == points
    assert set(by) == {"full", "blank", "wrong", "broken"}
    total = sum(points.values())
    assert by["full"]["total"] == total and all(by["full"][i] == points[i] for i in ids)
    assert by["blank"]["total"] == 0 and all(by["blank"][i] == 0 for i in ids)
    assert by["broken"]["total"] == 0 and "unreadable" in by["broken"]["notes"]
    assert by["wrong"][wrong_id] == 0 and by["wrong"]["total"] == total - points[wrong_id]
    assert all(by["wrong"][i] == points[i] for i in ids if i != wrong_id)

    table = course.markdown_table(columns, rows, maxima)
    assert table.splitlines()[0] == "| student | " + " | ".join(ids) + " | total |"
    course.write_csv(tmp_path / "out" / "grades.csv", columns, rows)
    assert (tmp_path / "out" / "grades.csv").read_text().splitlines()[0].startswith("student," + ",".join(ids))


def test_nbgrader_command_line_generates_autogrades_and_exports(course, tmp_path):
    """The way instructors run nbgrader itself (issue 24): ``nbgrader generate_assignment`` on chapter 00 as the
    course's source, ``nbgrader autograde`` of a solved and a blank copy of the release, ``nbgrader export``.
    Independent of scripts/course.py's own grading: nbgrader's command line, its database and its CSV."""
    import csv
    import os
    import shutil
    import subprocess

    import nbformat

    (tmp_path / "source" / "ps00").mkdir(parents=True)
    shutil.copy(SMALL, tmp_path / "source" / "ps00" / SMALL.name)
    (tmp_path / "nbgrader_config.py").write_text(
        f'c = get_config()\nc.CourseDirectory.course_id = "lossbook"\nc.CourseDirectory.root = {str(tmp_path)!r}\n')
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def nbgrader(*args):
        done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"

    nbgrader("generate_assignment", "ps00", "--create", "--force")
    released = _read(tmp_path / "release" / "ps00" / SMALL.name)
    teacher = _read(SMALL)
    assert not any("BEGIN SOLUTION" in c.source for c in released.cells)  # nbgrader's own student edition
    for student, nb in (("solved", _fill(released, teacher)), ("blank", released)):
        (tmp_path / "submitted" / student / "ps00").mkdir(parents=True)
        nbformat.write(nb, tmp_path / "submitted" / student / "ps00" / SMALL.name)
    nbgrader("autograde", "ps00", "--create")
    nbgrader("export")
    with open(tmp_path / "grades.csv") as f:
        scores = {row["student_id"]: (float(row["score"]), float(row["max_score"])) for row in csv.DictReader(f)}
    total = float(sum(e["points"] for e in course.exercises(teacher)))
    assert scores == {"solved": (total, total), "blank": (0.0, total)}


def test_sanitizing_keeps_the_answers_and_restores_the_tests(course):
    """As nbgrader's OverwriteCells: a retyped answer stays the student's, a deleted or edited test comes back."""
    import nbformat

    teacher = _read(SMALL)
    nb = course.student_notebook(teacher)
    solution = next(i for i, c in enumerate(nb.cells) if _meta(c).get("solution"))
    nb.cells[solution] = nbformat.v4.new_markdown_cell("my answer", metadata=nb.cells[solution].metadata)
    tests = [c for c in nb.cells if _meta(c).get("grade")]
    nb.cells.remove(tests[-1])
    tests[0].source = "pass"
    tests[0].metadata["nbgrader"]["points"] = 100
    extra = nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade": True, "points": 5, "grade_id": "mine",
                                                                      "solution": False, "locked": False}})
    nb.cells.append(extra)
    out = course.sanitize(nb, teacher)
    assert out.cells[solution].cell_type == "code" and out.cells[solution].source == "my answer"
    teacher_tests = [c for c in teacher.cells if _meta(c).get("grade")]
    out_tests = [c for c in out.cells if _meta(c).get("grade")]
    assert [c.source for c in out_tests] == [c.source for c in teacher_tests]  # hidden tests included
    assert [_meta(c)["points"] for c in out_tests] == [_meta(c)["points"] for c in teacher_tests]
    assert "nbgrader" not in out.cells[-1].metadata  # an id the instructor edition does not have grades nothing


def test_a_cell_that_runs_too_long_scores_zero_and_the_run_goes_on(course, tmp_path):
    import nbformat

    teacher = _read(SMALL)
    first = course.exercises(teacher)[0]["grade_id"].replace("check", "solution")
    nb = _fill(course.student_notebook(teacher), teacher,
               replace={first: "my_logsumexp = ...\nimport time\ntime.sleep(60)"})
    nbformat.write(nb, tmp_path / "slow.ipynb")
    result = course.grade_notebook(tmp_path / "slow.ipynb", SMALL, timeout=3)
    ids = list(result.maxima)
    assert result.scores[ids[0]] == 0 and result.scores[ids[1]] == 0  # ex2 builds on ex1's function
    assert result.note == ""


def test_the_course_extra_pins_nbgrader_and_setup_installs_it():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["course"] == ["nbgrader==0.9.5"]
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    pattern = r'pip install --quiet (?:--use-pep517 )?-c constraints\.txt -e "\.\[[a-z,]*\bcourse\b[a-z,]*\]"'
    assert re.search(pattern, setup)


def test_the_readme_commands(course, tmp_path, capsys):
    """`course.py student` (a narrowed run) and `course.py grade` on a folder with nothing to grade."""
    assert course.main(["student", str(SMALL), "--out", str(tmp_path / "student")]) == 0
    assert (tmp_path / "student" / SMALL.name).exists()
    out = capsys.readouterr().out
    assert f"| {SMALL.name} | 2 | 3 |" in out and "student edition of 1 notebooks" in out
    (tmp_path / "empty").mkdir()
    assert course.main(["grade", str(tmp_path / "empty"), "--csv", str(tmp_path / "g.csv")]) == 1
    assert "no submissions found" in capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    for command in ("scripts/course.py student", "scripts/course.py grade SUBMISSIONS_DIR"):
        assert command in readme
