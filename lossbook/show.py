"""Render a lossbook function's real source in a notebook (never re-typed)."""

from __future__ import annotations

import inspect
from pathlib import Path

from . import _trace

__all__ = ["show_source", "source_location"]

_PACKAGE_ROOT = Path(__file__).resolve().parent


def source_location(obj) -> tuple[str, int, int]:
    """(``lossbook/module.py``, first line, last line) of a lossbook object; no machine paths."""
    path = Path(inspect.getsourcefile(obj)).resolve()
    try:
        rel = "lossbook/" + path.relative_to(_PACKAGE_ROOT).as_posix()
    except ValueError as err:
        raise ValueError(f"show_source renders lossbook's own code; {obj!r} lives outside the package") from err
    lines, first = inspect.getsourcelines(obj)
    return rel, first, first + len(lines) - 1


def show_source(obj):
    """The source of ``obj`` as a Markdown code block headed by its file and lines."""
    from IPython.display import Markdown

    rel, first, last = source_location(obj)
    source = inspect.getsource(obj).rstrip()
    _trace.record(obj, rel, first, last)  # a no-op unless tests/test_rendered_code_runs.py asked for a trace
    return Markdown(f"`{rel}`, lines {first}–{last}\n\n```python\n{source}\n```")
