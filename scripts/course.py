"""The course kit: the book's student edition, and autograding of what students hand back (nbgrader).

    .venv/bin/python scripts/course.py student                 # every chapter -> build/student/NN_*.ipynb
    .venv/bin/python scripts/course.py student notebooks/00_how_to_read_this_book.ipynb --out /tmp/student
    .venv/bin/python scripts/course.py grade SUBMISSIONS_DIR   # -> build/grades.csv and a markdown table

The notebooks in notebooks/ are the *instructor edition*: every exercise is an nbgrader solution cell (the answer
between ``### BEGIN SOLUTION`` / ``### END SOLUTION``) followed by a read-only autograded test cell with points
(and ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` where a visible check would give the answer away).

``student`` runs nbgrader's own preprocessors from Python, in the order ``nbgrader generate_assignment`` runs them
(LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums, ClearHiddenTests, ComputeChecksums),
and also drops the stored widget state, so nothing computed by a solution reaches the student.  No nbgrader course
directory or database is needed.

``grade`` takes a folder of submissions in either layout (or both):

    SUBMISSIONS_DIR/alice/00_how_to_read_this_book.ipynb        one folder per student, or
    SUBMISSIONS_DIR/alice__00_how_to_read_this_book.ipynb       files named STUDENT__CHAPTER.ipynb

A chapter is matched by its file name (``00_how_to_read_this_book``) or just its number (``00.ipynb``,
``alice__00.ipynb``).  Each submission is sanitised as ``nbgrader autograde`` does (outputs cleared; every test
cell, and the metadata of every graded cell, overwritten from the instructor edition, as OverwriteCells does;
deleted test cells put back; duplicated ids dropped), executed with a per-cell timeout (a cell that runs too long is
interrupted and scores 0), and scored with nbgrader's own rule (``nbgrader.utils.determine_grade``: a test cell
that raised or wrote to stderr scores 0, otherwise its points; a test cell that never ran scores 0).  A blank,
broken or unreadable submission scores 0 for its exercises and never stops the run.  Students' code runs with your
permissions, as in nbgrader: grade in a container or a throw-away account.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _nbgrader():
    try:
        from nbgrader import utils
        from nbgrader.preprocessors import (
            CheckCellMetadata,
            ClearHiddenTests,
            ClearOutput,
            ClearSolutions,
            ComputeChecksums,
            LockCells,
        )
    except ImportError as err:  # pragma: no cover - the message is the point
        sys.exit(f"nbgrader is not installed ({err}); install the course extra: pip install -e '.[course]' "
                 "(bash scripts/setup.sh does)")
    return utils, [LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums, ClearHiddenTests,
                   ComputeChecksums, CheckCellMetadata]


def chapters() -> list[Path]:
    """The instructor edition: notebooks/NN_*.ipynb, in order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def exercises(nb) -> list[dict]:
    """The autograded test cells of a notebook: [{"grade_id", "points"}] in order."""
    return [{"grade_id": _meta(c)["grade_id"], "points": float(_meta(c).get("points", 0))}
            for c in nb.cells if _meta(c).get("grade")]


# ---------------------------------------------------------------------------------------------- student edition
def student_notebook(nb):
    """The student edition of one instructor notebook (a new notebook; the argument is not changed)."""
    _, steps = _nbgrader()
    nb = copy.deepcopy(nb)
    resources: dict = {}
    for step in steps:
        nb, resources = step().preprocess(nb, resources)
    nb.metadata.pop("widgets", None)  # widget state is output too: it could show what a solution computed
    return nb


def build_student(paths: list[Path], out: Path) -> list[tuple[str, int, float, float]]:
    """Write the student edition of ``paths`` into ``out``; returns (name, exercises, points, seconds)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in paths:
        start = time.perf_counter()
        nb = student_notebook(nbformat.read(path, as_version=4))
        nbformat.write(nb, out / path.name)
        ex = exercises(nb)
        rows.append((path.name, len(ex), sum(e["points"] for e in ex), time.perf_counter() - start))
    return rows


# ---------------------------------------------------------------------------------------------------- grading
@dataclass
class Graded:
    chapter: str  # instructor notebook stem
    scores: dict[str, float] = field(default_factory=dict)  # grade_id -> points scored
    maxima: dict[str, float] = field(default_factory=dict)  # grade_id -> points possible
    note: str = ""
    seconds: float = 0.0


def sanitize(submitted, instructor):
    """nbgrader autograde's sanitising, without its database: the instructor edition is the source of truth."""
    source = {_meta(c)["grade_id"]: c for c in instructor.cells if _meta(c).get("grade_id")}
    order = [_meta(c)["grade_id"] for c in instructor.cells if _meta(c).get("grade_id")]
    cells, seen = [], set()
    for cell in submitted.cells:
        cell = copy.deepcopy(cell)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        grade_id = _meta(cell).get("grade_id")
        if grade_id is not None and (grade_id in seen or grade_id not in source):
            cell.metadata.pop("nbgrader", None)  # DeduplicateIds / an id the instructor edition does not have
            grade_id = None
        if grade_id is None and "nbgrader" in cell.get("metadata", {}):
            cell.metadata.pop("nbgrader")  # a cell can't make itself graded
        if grade_id is not None:
            seen.add(grade_id)
            original = source[grade_id]
            if not _meta(original).get("solution"):
                cell = copy.deepcopy(original)  # test and read-only cells: the instructor's, hidden tests included
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            else:  # the student's answer, in the instructor's cell type and metadata
                if cell.cell_type != original.cell_type:
                    cell = nbformat.from_dict({"id": cell.get("id", original.get("id")),
                                               "cell_type": original.cell_type, "metadata": cell.metadata,
                                               "source": cell.source, **({"outputs": [], "execution_count": None}
                                                                         if original.cell_type == "code" else {})})
                cell.metadata["nbgrader"] = copy.deepcopy(original.metadata["nbgrader"])
        cells.append(cell)
    for k, grade_id in enumerate(order):  # cells the student deleted: back after the cell that preceded them
        if grade_id in seen:
            continue
        cell = copy.deepcopy(source[grade_id])
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        where = len(cells)
        for previous in reversed(order[:k]):
            hits = [i for i, c in enumerate(cells) if _meta(c).get("grade_id") == previous]
            if hits:
                where = hits[0] + 1
                break
        cells.insert(where, cell)
        seen.add(grade_id)
    nb = copy.deepcopy(submitted)
    nb.cells = cells
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.pop("widgets", None)
    return nb


def execute(nb, timeout: int) -> str:
    """Run every cell (errors do not stop the run; a cell past ``timeout`` s is interrupted); returns a note."""
    from nbclient import NotebookClient

    os.environ.setdefault("LOSSBOOK_DEVICE", "cpu")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": f"the cell ran longer than {timeout} s",
                          "traceback": [f"CellTimeoutError: the cell ran longer than {timeout} s"]},
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    try:
        client.execute()
    except Exception as err:  # a dead kernel, a broken notebook: grade what ran
        return f"execution stopped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return ""


def grade_notebook(submission: Path, instructor_path: Path, *, timeout: int = 120) -> Graded:
    utils, _ = _nbgrader()
    instructor = nbformat.read(instructor_path, as_version=4)
    result = Graded(instructor_path.stem)
    for ex in exercises(instructor):
        result.maxima[ex["grade_id"]] = ex["points"]
        result.scores[ex["grade_id"]] = 0.0
    start = time.perf_counter()
    try:
        submitted = nbformat.read(submission, as_version=4)
        nb = sanitize(submitted, instructor)
    except Exception as err:  # not JSON, not a notebook, ...
        result.note = f"unreadable: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return result
    result.note = execute(nb, timeout)
    for cell in nb.cells:
        meta = _meta(cell)
        if not meta.get("grade") or meta.get("grade_id") not in result.maxima:
            continue
        if cell.cell_type == "code" and cell.get("execution_count") is None:
            continue  # never ran (the kernel died first): 0
        score, _ = utils.determine_grade(cell)
        result.scores[meta["grade_id"]] = float(score or 0.0)
    result.seconds = time.perf_counter() - start
    return result


def _chapter_for(name: str, books: list[Path]) -> Path | None:
    for path in books:
        if name == path.stem:
            return path
    number = re.match(r"(\d\d)(?:_|$)", name)
    if number:
        hits = [p for p in books if p.stem.startswith(number.group(1) + "_")]
        if len(hits) == 1:
            return hits[0]
    return None


def find_submissions(folder: Path, books: list[Path]) -> tuple[dict[str, dict[Path, Path]], list[str]]:
    """{student: {instructor notebook: submitted file}} and a list of files that were not understood."""
    found: dict[str, dict[Path, Path]] = {}
    skipped = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            student, files = entry.name, [(f, f.stem) for f in sorted(entry.glob("*.ipynb"))]
        elif entry.suffix == ".ipynb" and "__" in entry.stem:
            student, chapter = entry.stem.split("__", 1)
            files = [(entry, chapter)]
        else:
            skipped.append(entry.name)
            continue
        for path, chapter in files:
            book = _chapter_for(chapter, books)
            if book is None:
                skipped.append(str(path.relative_to(folder)))
                continue
            found.setdefault(student, {})[book] = path
    return found, skipped


def grade_folder(folder: Path, *, timeout: int = 120, books: list[Path] | None = None, log=print):
    """Grade every submission in ``folder``; returns (columns, rows, maxima) for the score table."""
    books = books if books is not None else chapters()
    found, skipped = find_submissions(folder, books)
    for name in skipped:
        log(f"skipped {name}: not STUDENT/CHAPTER.ipynb or STUDENT__CHAPTER.ipynb with a known chapter")
    graded_books = sorted({b for subs in found.values() for b in subs})
    columns, maxima = [], {}
    for book in graded_books:
        for ex in exercises(nbformat.read(book, as_version=4)):
            columns.append(ex["grade_id"])
            maxima[ex["grade_id"]] = ex["points"]
    rows = []
    for student, subs in sorted(found.items()):
        row: dict = {"student": student, **{c: 0.0 for c in columns}}
        notes = []
        for book in graded_books:
            if book not in subs:
                notes.append(f"{book.stem}: not submitted")
                continue
            result = grade_notebook(subs[book], book, timeout=timeout)
            row.update(result.scores)
            log(f"graded {student} / {book.stem}: {sum(result.scores.values()):g}/{sum(result.maxima.values()):g} "
                f"in {result.seconds:.1f} s{'; ' + result.note if result.note else ''}")
            if result.note:
                notes.append(f"{book.stem}: {result.note}")
        row["total"] = sum(row[c] for c in columns)
        row["max"] = sum(maxima.values())
        row["notes"] = "; ".join(notes)
        rows.append(row)
    return columns, rows, maxima


def markdown_table(columns: list[str], rows: list[dict], maxima: dict[str, float]) -> str:
    head = ["student", *columns, "total"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             "| (max) | " + " | ".join(f"{maxima[c]:g}" for c in columns) + f" | {sum(maxima.values()):g} |"]
    for row in rows:
        lines.append(f"| {row['student']} | " + " | ".join(f"{row[c]:g}" for c in columns) + f" | {row['total']:g} |")
    return "\n".join(lines)


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", *columns, "total", "max", "notes"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:g}" if isinstance(v, float) else v) for k, v in row.items()})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="build the student edition (default: every chapter, into build/student/)")
    s.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    s.add_argument("--out", type=Path, default=ROOT / "build" / "student")
    g = sub.add_parser("grade", help="autograde a folder of submitted notebooks")
    g.add_argument("submissions", type=Path)
    g.add_argument("--csv", type=Path, default=ROOT / "build" / "grades.csv")
    g.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    args = parser.parse_args(argv)
    if args.command == "student":
        start = time.perf_counter()
        paths = [p.resolve() for p in args.notebooks] or chapters()
        rows = build_student(paths, args.out)
        print("| chapter | exercises | points |\n|---|---|---|")
        for name, n, points, _ in rows:
            print(f"| {name} | {n} | {points:g} |")
        total = sum(r[2] for r in rows)
        print(f"student edition of {len(rows)} notebooks ({sum(r[1] for r in rows)} exercises, {total:g} points) "
              f"in {args.out} ({time.perf_counter() - start:.1f} s)")
        return 0
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    start = time.perf_counter()
    columns, rows, maxima = grade_folder(args.submissions, timeout=args.timeout)
    if not rows:
        print(f"no submissions found in {args.submissions}")
        return 1
    write_csv(args.csv, columns, rows)
    print(markdown_table(columns, rows, maxima))
    print(f"\n{len(rows)} students graded in {time.perf_counter() - start:.1f} s; scores in {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
