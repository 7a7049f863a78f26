"""Re-train every chapter's demos on other seeds and report whether the lesson's gap still holds.

    .venv/bin/python scripts/seeds.py                    # seeds 1 and 2 of every chapter with a training demo
    .venv/bin/python scripts/seeds.py notebooks/03_masked_lm.ipynb --seeds 1 2 3

A chapter's training cells seed their initial weights and batch order with ``SEED = lossbook.demo_seed()``
(0, the stored outputs, unless ``LOSSBOOK_SEED`` says otherwise); the data stay the same. Each notebook is
executed with LOSSBOOK_SEED=N into --output-dir (the stored notebooks are never touched), and its asserts are
the check: a demo's asserts compare the chapter's mistake with the fix, so a notebook that runs to the end on
seed N is a gap that held on seed N, and a failed assert is reported with its cell. The report
(--output-dir/report.md) shows, per chapter, seed 0's trained numbers as stored beside each new seed's.

With --record, what each chapter's ``lossbook.spread.gap_on_seeds`` call measured on the new seeds goes into
notebooks/seed_spread.json (a chapter is recorded only when every one of its seeds passed), with a fingerprint of
the chapter's code cells: the chapter prints those rows beside its own run's, and tests/test_seed_spread.py fails
when the code changed since. Re-execute the recorded chapters afterwards (scripts/execute_notebooks.py).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execute_notebooks import ROOT, execute  # noqa: E402


def seeded(path: Path) -> bool:
    """Does the notebook seed its demos with lossbook.demo_seed()?"""
    return "lossbook.demo_seed()" in path.read_text()


def trained_numbers(nb: dict) -> list[str]:
    """The printed text of the cells that use SEED or print trained numbers, in order."""
    texts = []
    for cell in nb["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code" or not ("SEED" in source or source.startswith("# trained numbers")):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                texts.append(text.rstrip())
            elif out.get("output_type") == "display_data" and "text/markdown" in out.get("data", {}):
                data = out["data"]["text/markdown"]
                texts.append(("".join(data) if isinstance(data, list) else data).rstrip())
    return [t for t in texts if t]


def run(path: Path, seed: int, out_dir: Path) -> dict:
    os.environ["LOSSBOOK_SEED"] = str(seed)
    os.environ["LOSSBOOK_SEED_RECORD"] = str((out_dir / "gaps").resolve())
    target = out_dir / f"seed{seed}" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        execute(path, target)
        failure = None
    except CellExecutionError as err:
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines() if line.strip()]
        error = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "error")
        where = [line.removeprefix("---->").strip() for line in lines if line.startswith("---->")]
        failure = f"{error} at `{where[-1]}`" if where else error
    elapsed = time.perf_counter() - start
    numbers = trained_numbers(json.loads(target.read_text())) if failure is None else []
    return {"seed": seed, "seconds": elapsed, "failure": failure, "numbers": numbers}


def record_gaps(path: Path, seeds: list[int], gaps_dir: Path) -> None:
    """Merge the seeds' gap_on_seeds rows of one chapter into notebooks/seed_spread.json."""
    import torch

    from lossbook.spread import RECORD, code_fingerprint

    chapter = path.stem
    rows = {}
    for seed in seeds:
        found = gaps_dir / f"{chapter}.seed{seed}.json"
        if not found.exists():
            print(f"{chapter}: no gap_on_seeds row for seed {seed}; not recorded")
            return
        rows[str(seed)] = json.loads(found.read_text())
    fingerprint = code_fingerprint(path)
    lock_path = Path(tempfile.gettempdir()) / "lossbook-seed-spread.lock"
    with open(lock_path, "w") as lock:  # two seeds may be recorded by two processes at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        kept = record.get(chapter, {})
        if kept.get("code_sha256") == fingerprint:  # the same code: keep the seeds recorded before
            rows = {**kept["seeds"], **rows}
        record[chapter] = {
            "code_sha256": fingerprint,
            "recorded_with": f"seeds {', '.join(sorted(rows))} by scripts/seeds.py --record, "
            f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {platform.machine()} CPU",
            "seeds": dict(sorted(rows.items())),
        }
        RECORD.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
    print(f"{chapter}: recorded seeds {', '.join(sorted(rows))} in {RECORD.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook that calls demo_seed()")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2], help="default: 1 2 (0 is stored)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "build" / "seeds")
    parser.add_argument("--record", action="store_true", help="write the gaps to notebooks/seed_spread.json")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    paths = [p for p in paths if seeded(p)]
    if not paths:
        parser.error("no notebook given calls lossbook.demo_seed()")
    if 0 in args.seeds:
        parser.error("seed 0 is what the stored notebooks hold: give other seeds")
    os.environ.setdefault("LOSSBOOK_DEVICE", "cpu")
    os.environ["PYTHONHASHSEED"] = "0"
    report = ["# Other seeds", "", f"Seeds {', '.join(map(str, args.seeds))} beside the stored seed 0; "
              "a seed passes when every assert of its notebook holds.", ""]
    failed = 0
    for stale in (args.output_dir / "gaps").glob("*.json"):  # rows from an earlier run are never recorded
        stale.unlink()
    for path in paths:
        stored = {"seed": 0, "seconds": None, "failure": None,
                  "numbers": trained_numbers(nbformat.read(path, as_version=4))}
        rows = [stored]
        for seed in args.seeds:
            row = run(path, seed, args.output_dir)
            failed += row["failure"] is not None
            verdict = "every assert holds" if row["failure"] is None else f"FAILED: {row['failure']}"
            print(f"{path.relative_to(ROOT)} seed {seed}: {verdict} ({row['seconds']:.0f} s)", flush=True)
            rows.append(row)
        if args.record and all(r["failure"] is None for r in rows):
            record_gaps(path, args.seeds, args.output_dir / "gaps")
        report += [f"## {path.stem}", ""]
        for row in rows:
            head = "seed 0 (stored)" if row["seconds"] is None else (
                f"seed {row['seed']}: " + ("every assert holds" if row["failure"] is None
                                           else f"**failed**: `{row['failure']}`") + f" ({row['seconds']:.0f} s)")
            report += [f"### {head}", ""] + [f"```\n{text}\n```" for text in row["numbers"]] + [""]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "report.md").write_text("\n".join(report))
    print(f"{len(paths)} notebooks x {len(args.seeds)} seeds: {failed} failed; report: "
          f"{(args.output_dir / 'report.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
