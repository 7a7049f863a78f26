"""Per-notebook nbval times from pytest's JUnit XML files, one column per file (CI: the two kernel passes).

    .venv/bin/python scripts/notebook_times.py build/ci-main.xml build/ci-portable.xml

A notebook's time is the sum of its cells' (the first cell includes starting the kernel). The book's goal is
at most 180 s per notebook on the 2-core CI machine; a notebook over it is marked.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

GOAL_S = 180.0


def notebook_times(path: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    for case in ET.parse(path).iter("testcase"):
        name = case.get("classname", "")
        if name.endswith(".ipynb"):
            notebook = name.removeprefix("notebooks.")
            times[notebook] = times.get(notebook, 0.0) + float(case.get("time", 0.0))
    return times


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(__doc__)
    columns = {Path(p).stem: notebook_times(Path(p)) for p in argv if Path(p).exists()}
    missing = [p for p in argv if not Path(p).exists()]
    names = sorted({n for times in columns.values() for n in times})
    print("| notebook | " + " | ".join(f"{c} (s)" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in names:
        cells = []
        for times in columns.values():
            t = times.get(name)
            cells.append("-" if t is None else f"{t:.0f}" + (" (over the 180 s goal)" if t > GOAL_S else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| all notebooks | " + " | ".join(f"{sum(t.values()):.0f}" for t in columns.values()) + " |")
    for p in missing:
        print(f"notebook_times: {p} not found (that pass did not get to write it)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
