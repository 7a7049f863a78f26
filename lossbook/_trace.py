"""Which lines of lossbook ran, and what a chapter rendered: the record behind "what you read is what runs".

Off unless ``LOSSBOOK_TRACE_DIR`` is set (tests/conftest.py sets it for the nbval kernels of a pytest session
that collects tests/test_rendered_code_runs.py). Then ``import lossbook`` inside an IPython kernel starts a
``sys.settrace`` tracer that line-traces only frames whose code lives in lossbook's files (every other frame
costs one call event: the global trace function returns ``None``), ``show_source`` records what it rendered,
and after every cell the kernel writes ``<LOSSBOOK_TRACE_NAME>.<pid>.json`` to that directory. A process that is
not a kernel (a torchrun rank a chapter starts) writes its file at exit. The test reads the files.
"""

from __future__ import annotations

import ast
import atexit
import inspect
import json
import os
import sys
import time
from pathlib import Path

ENV_DIR = "LOSSBOOK_TRACE_DIR"
ENV_NAME = "LOSSBOOK_TRACE_NAME"

_PACKAGE_ROOT = Path(__file__).resolve().parent


class Tracer:
    """Line hits of the code under ``roots`` (files keyed ``<root name>/<relative path>``) and rendered objects."""

    def __init__(self, roots=(_PACKAGE_ROOT,)):
        self.roots = [Path(r).resolve() for r in roots]
        self.hits: dict[str, set[int]] = {}
        self.rendered: list[dict] = []
        self._files: dict[str, object] = {}  # co_filename -> local trace function, or None: not ours
        self._codes: dict[object, object] = {}  # code object -> [calls, its lines] or True: every line hit
        self.cells = 0

    def key(self, filename: str) -> str | None:
        """``lossbook/x.py`` for a file under a root, else None."""
        try:
            path = Path(filename).resolve()
        except (OSError, ValueError):
            return None
        if path == Path(__file__).resolve():
            return None  # the tracer's own frames (the snapshot) are not traced
        for root in self.roots:
            if path.is_relative_to(root):
                return f"{root.name}/{path.relative_to(root).as_posix()}"
        return None

    def _local_for(self, filename: str):
        key = self.key(filename) if filename and not filename.startswith("<") else None
        if key is None:
            self._files[filename] = None
            return None
        add = self.hits.setdefault(key, set()).add
        local_exempt = exempt_lines(filename)

        def local(frame, event, arg):
            if event == "line":
                add(frame.f_lineno)
            return local

        local.lines = self.hits[key]
        local.exempt = local_exempt
        self._files[filename] = local
        return local

    def _global(self, frame, event, arg):
        code = frame.f_code
        try:
            local = self._files[code.co_filename]
        except KeyError:
            local = self._local_for(code.co_filename)
        if local is None:
            return None
        # a code object whose every line has run needs no more line events (hot loops cost one call event)
        state = self._codes.get(code)
        if state is True:
            return None
        if state is None:
            lines = {line for _, _, line in code.co_lines() if line is not None} - {code.co_firstlineno}
            lines -= local.exempt
            state = self._codes[code] = [0, lines]
        state[0] += 1
        if state[0] % 32 == 0 and state[1] <= local.lines:
            self._codes[code] = True
            return None
        return local

    def start(self):
        # the main thread only: the kernel runs cells there, and the snapshot (written after each cell, in the same
        # thread) then never reads a set another thread is adding to
        sys.settrace(self._global)
        return self

    def stop(self):
        if sys.gettrace() == self._global:
            sys.settrace(None)

    def rearm(self, *_):
        """Put the tracer back if something switched tracing off (never over another tool's tracer)."""
        if sys.gettrace() is None:
            sys.settrace(self._global)

    def record(self, obj, file: str | None = None, first: int | None = None, last: int | None = None):
        """Note a rendered function or class: its file key, lines and source as rendered."""
        lines, start = inspect.getsourcelines(obj)
        self.rendered.append({
            "file": file or self.key(inspect.getsourcefile(obj)),
            "first": first or start,
            "last": last or start + len(lines) - 1,
            "qualname": f"{obj.__module__}.{obj.__qualname__}",
            "kind": "class" if inspect.isclass(obj) else "function",
            "source": "".join(lines),
        })

    def snapshot(self) -> dict:
        return {
            "name": os.environ.get(ENV_NAME, "kernel"),
            "pid": os.getpid(),
            "cells": self.cells,
            "cpu_s": time.process_time(),
            "codes": {"traced": len(self._codes), "done": list(self._codes.values()).count(True)},
            "rendered": list(self.rendered),
            "hits": {key: sorted(lines) for key, lines in list(self.hits.items())},
        }

    def write(self, directory):
        data = self.snapshot()
        path = Path(directory) / f"{data['name']}.{data['pid']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def exempt_lines(filename: str) -> set[int]:
    """Lines the test does not ask to run (docstrings, ``except`` handlers, blocks ending in ``raise``).

    A code object is no longer line-traced once all its other lines ran; tests/test_rendered_code_runs.py never
    asks about these, so waiting for them would keep a hot function with an error branch traced for good.
    """
    try:
        tree = ast.parse(Path(filename).read_text())
    except (OSError, SyntaxError, ValueError):
        return set()
    exempt: set[int] = set()

    def span(nodes):
        exempt.update(range(nodes[0].lineno, nodes[-1].end_lineno + 1))

    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                function_body = name == "body" and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                if isinstance(block[-1], ast.Raise) and not function_body:  # a function ending in raise is not
                    span(block)  # an error branch: its body's other statements are its work
                elif name == "body" and isinstance(block[0], ast.Expr) and isinstance(block[0].value, ast.Constant):
                    span(block[:1])
        if isinstance(node, ast.ExceptHandler):
            span([node])
    return exempt


_active: Tracer | None = None


def record(obj, file, first, last):
    """show_source's hook: a no-op unless tracing is on."""
    if _active is not None:
        _active.record(obj, file, first, last)


def install():
    """Start tracing lossbook for this process when LOSSBOOK_TRACE_DIR is set (import lossbook calls this)."""
    global _active
    directory = os.environ.get(ENV_DIR)
    if not directory or _active is not None:
        return
    _active = Tracer().start()
    ipython = None
    if "IPython" in sys.modules:
        ipython = sys.modules["IPython"].get_ipython()
    if ipython is not None:

        def after_cell(_result):
            _active.cells += 1
            try:
                _active.write(directory)
            except OSError as err:  # never fail a reader's cell over the test record
                print(f"lossbook trace: could not write to {directory}: {err}", file=sys.stderr)

        ipython.events.register("pre_run_cell", _active.rearm)
        ipython.events.register("post_run_cell", after_cell)
    else:
        atexit.register(_active.write, directory)
