"""Re-execute notebooks in place, on the CPU, deterministically; print each one's time.

    .venv/bin/python scripts/execute_notebooks.py                 # every notebook
    .venv/bin/python scripts/execute_notebooks.py notebooks/01_cross_entropy.ipynb
    .venv/bin/python scripts/execute_notebooks.py --device cuda --output-dir /tmp/run   # try a GPU, keep the originals

The stored outputs are the CPU ones (nbval compares them in CI); ``--device`` other than cpu needs
``--output-dir``, so a GPU run never overwrites them.

After executing, volatile metadata is dropped (timestamps, kernel versions)
and widget model ids are renamed deterministically, so re-running an
unchanged notebook changes only outputs that legitimately vary (timings).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3"}
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def clean(nb: nbformat.NotebookNode, stem: str) -> nbformat.NotebookNode:
    widgets = nb.metadata.get("widgets")
    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
    if widgets:
        nb.metadata["widgets"] = widgets
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
        cell.metadata.pop("scrolled", None)
    text = json.dumps(nb)
    ids = list(widgets[WIDGET_STATE]["state"]) if widgets else []
    for i, old in enumerate(ids):
        text = text.replace(old, hashlib.sha1(f"{stem}:{i}".encode()).hexdigest()[:32])
    return nbformat.from_dict(json.loads(text))


def execute(path: Path, output: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(clean(nb, path.stem), output)
    return elapsed


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    parser.add_argument("--device", default="cpu", help="LOSSBOOK_DEVICE for the run (default: cpu)")
    parser.add_argument("--output-dir", type=Path, help="write executed copies here instead of in place")
    args = parser.parse_args(argv)
    if args.device != "cpu" and args.output_dir is None:
        parser.error("--device other than cpu needs --output-dir: the stored outputs are the CPU ones")
    os.environ["LOSSBOOK_DEVICE"] = args.device
    os.environ["PYTHONHASHSEED"] = "0"
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for path in paths:
        elapsed = execute(path, args.output_dir / path.name if args.output_dir else path)
        total += elapsed
        print(f"{path.relative_to(ROOT)}: {elapsed:.1f} s", flush=True)
    print(f"all {len(paths)} notebooks: {total:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
