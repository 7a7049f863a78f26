"""The gap between a chapter's mistake and its fix on three seeds: this run's, and two recorded by scripts/seeds.py.

A chapter's demo trains the fix and the mistake once, on ``SEED = lossbook.demo_seed()`` (0, the stored outputs).
Re-training every chapter on two more seeds takes ten minutes, too long for each reader's run and for CI, so
``scripts/seeds.py --record`` re-executes the chapters with ``LOSSBOOK_SEED=1`` and ``2`` and keeps what each
demo's ``gap_on_seeds`` call measured in ``notebooks/seed_spread.json``, with the torch version and a fingerprint
of the chapter's code cells up to that call. ``gap_on_seeds`` prints this run's numbers beside the recorded
seeds; ``tests/test_seed_spread.py`` fails when a chapter's code cells changed since the record was made, so the
recorded rows are never older than the code that shows them. The chapter's asserts check this run's seed; the
recording run checked the other two (a failed assert stops the recording).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

RECORD = Path(__file__).resolve().parent.parent / "notebooks" / "seed_spread.json"
SEEDS = (0, 1, 2)


def code_fingerprint(notebook: str | Path) -> str:
    """sha256 of the notebook's code cells, up to and including the last one that calls ``gap_on_seeds``."""
    nb = json.loads(Path(notebook).read_text())
    sources = [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]
    last = max((i for i, s in enumerate(sources) if "gap_on_seeds(" in s), default=len(sources) - 1)
    return hashlib.sha256("\n\0".join(sources[: last + 1]).encode()).hexdigest()


def gap_on_seeds(chapter: str, seed: int, gaps: dict[str, tuple[float, float]], *, lower_is_better=()) -> None:
    """Print each metric's (fix, mistake) on this run's ``seed`` and on the recorded other seeds.

    ``gaps`` maps a metric's name to ``(fix, mistake)``; the gap is ``fix - mistake``, or ``mistake - fix`` for
    the names in ``lower_is_better``, so a positive gap is the fix winning. With ``LOSSBOOK_SEED_RECORD`` set
    (scripts/seeds.py sets it) this run's row is also written to that folder, for ``--record`` to collect.
    """
    if not isinstance(chapter, str) or not isinstance(seed, int) or not isinstance(gaps, dict) or not gaps:
        raise ValueError("gap_on_seeds(chapter: str, seed: int, gaps: {metric: (fix, mistake)}) got other types")
    unknown = set(lower_is_better) - set(gaps)
    if unknown:
        raise ValueError(f"lower_is_better names metrics not in gaps: {sorted(unknown)}")
    row = {name: [float(fix), float(mistake)] for name, (fix, mistake) in gaps.items()}
    out = os.environ.get("LOSSBOOK_SEED_RECORD")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{chapter}.seed{seed}.json").write_text(json.dumps(row))
    record = json.loads(RECORD.read_text()).get(chapter) if RECORD.exists() else None
    rows = {seed: row}
    for other in SEEDS:
        if other == seed:
            continue
        recorded = (record or {}).get("seeds", {}).get(str(other))
        if recorded is None or set(recorded) != set(row):
            if out:  # the recording run itself: the record is being made
                continue
            raise RuntimeError(
                f"notebooks/seed_spread.json has no seed {other} for {chapter!r} with the metrics {sorted(row)}: "
                f"run .venv/bin/python scripts/seeds.py notebooks/{chapter}.ipynb --record"
            )
        rows[other] = recorded
    width = max(len(name) for name in row)
    print(f"{'metric':{width}}  seed        fix    mistake        gap (> 0: the fix wins)")
    for name in row:
        for s in sorted(rows):
            fix, mistake = rows[s][name]
            gap = mistake - fix if name in lower_is_better else fix - mistake
            where = "this run" if s == seed else "recorded"
            print(f"{name:{width}}  {s} {where:8} {fix:8.3f} {mistake:10.3f} {gap:+10.3f}")
    if record:
        print(f"recorded seeds: {record['recorded_with']}")
