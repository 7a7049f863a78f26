"""What you read is what runs (issue 23): every function a chapter renders with ``show_source`` executes its body.

nbval runs the chapters with lossbook traced (tests/conftest.py, lossbook/_trace.py); these tests, ordered after
the notebooks, read each chapter's trace. For each rendered function, and each method of a rendered class that
the chapter calls, every statement of the body must run in the chapter's kernel (or in a process it starts),
except the docstring, ``except`` handlers and blocks that end in ``raise`` (error branches), and the entries of
ALLOW. A rendered body of which fewer than two statements ran is a stub (a call that hands the work to code the
reader is not shown) and fails too. A chapter that did not run in this session is skipped, unless the session
collected the whole book under LOSSBOOK_STRICT=1: then a missing trace fails.
"""

from __future__ import annotations

import ast
import json
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STRICT = os.environ.get("LOSSBOOK_STRICT", "") not in ("", "0")
STUB = "<stub>"

# (rendered qualname, the statement's first line as written stripped, STUB, or "*": all of it): why it need not run
ALLOW: dict[tuple[str, str], str] = {
    ("lossbook.device.pick_device", "*"): "its branch is the machine's and LOSSBOOK_DEVICE's; tests/test_device.py",
    ("lossbook.causal_lm.next_token_labels", "return labels.long()"):
        "an empty sequence dimension (nothing to shift); tests/test_causal_lm.py",
    ("lossbook.masked_lm.sample_masking", "if (not torch.is_tensor(special_tokens_mask)"):
        "the chapter passes special_ids; the collator's special_tokens_mask: tests/test_masked_lm.py",
    ("lossbook.masked_lm.sample_masking", "special = special_tokens_mask.detach().cpu().bool()"):
        "the same special_tokens_mask branch; tests/test_masked_lm.py",
    ("lossbook.sequence_classification.multi_label_loss", STUB):
        "upstream's branch is one BCEWithLogitsLoss call, shown whole",
    ("lossbook.loss_mapping.token_classification_entry", STUB):
        "reads config.num_labels; the loss it calls is chapter 05's token_classification_loss, rendered there",
    ("lossbook.demos.question_answering.loss_type", "return class_name"):
        "an exact LOSS_MAPPING key; tests/test_loss_mapping.py",
    ("lossbook.bugzoo.reward_laplace.StaleModelCopy", STUB): "a bug exhibit: one overridden line, shown whole",
    ("lossbook.spin.SPINTrainer.step", "self.history.log(self.global_step, **self.validate())"):
        "validation every valid_every steps; the chapter's runs validate per iteration; tests/test_spin.py",
    ("lossbook.bugzoo.spin.mutates_the_batch", STUB):
        "a bug exhibit: seed 002's own lines, retyped in one call (chapter 10 shows them)",
    ("lossbook.reward._margin_like", "if not math.isfinite(margin):"):
        "a Python number as the margin; chapter 07 passes the collator's tensor; tests/test_reward.py",
    ("lossbook.reward._margin_like", "return torch.full_like(rewards, float(margin))"):
        "the same Python-number margin; tests/test_reward.py",
    ("lossbook.reward._margin_like", "return margin.to(rewards.device).expand(rewards.shape)"):
        "a 0-dim margin (one for every pair); tests/test_reward.py",
    ("lossbook.memory.StorageTracker._track", "return  # already counted"):
        "a storage seen twice (a view); tests/test_chunked_cross_entropy.py",
}


@dataclass
class Statement:
    first: int  # file lines: the statement's own lines (a compound statement: its header)
    last: int
    text: str


@dataclass
class Body:
    qualname: str
    file: str
    first: int
    last: int
    statements: list[Statement] = field(default_factory=list)


# ----- which statements a rendered body has -----


def _is_docstring(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _header_end(stmt) -> int:
    """The last line of a compound statement's header (if/while: the test; for: the iterable; with: the items)."""
    if isinstance(stmt, ast.If | ast.While):
        return stmt.test.end_lineno
    if isinstance(stmt, ast.For | ast.AsyncFor):
        return stmt.iter.end_lineno
    if isinstance(stmt, ast.With | ast.AsyncWith):
        return stmt.items[-1].context_expr.end_lineno
    if isinstance(stmt, ast.Match):
        return stmt.subject.end_lineno
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return stmt.body[0].lineno - 1 if stmt.body[0].lineno > stmt.lineno else stmt.lineno
    return stmt.end_lineno


def _statements(block, lines, out, function_body=False):
    """The statements of ``block`` that must run (source ``lines``, AST line numbers).  A nested block that ends
    in ``raise`` is an error branch; a function body that ends in ``raise`` (checks, then a final refusal) is not."""
    if not block or (isinstance(block[-1], ast.Raise) and not function_body):
        return  # an error branch
    for stmt in block[1:] if _is_docstring(block[0]) else block:
        if isinstance(stmt, ast.Global | ast.Nonlocal | ast.Raise):
            continue  # declarations run no code; a raise is a refusal, not the work
        if isinstance(stmt, ast.Try | ast.TryStar):
            _statements(stmt.body, lines, out)  # the handlers are error branches; `try:` itself runs no code
            _statements(stmt.orelse, lines, out)
            _statements(stmt.finalbody, lines, out)
            continue
        decorators = getattr(stmt, "decorator_list", [])
        first = min([stmt.lineno] + [d.lineno for d in decorators])
        out.append(Statement(first, _header_end(stmt), lines[stmt.lineno - 1].strip()))
        if isinstance(stmt, ast.Match):
            for case in stmt.cases:
                _statements(case.body, lines, out)
        elif not isinstance(stmt, ast.ClassDef):
            _statements(getattr(stmt, "body", []), lines, out)
            _statements(getattr(stmt, "orelse", []), lines, out)


def bodies(rendered: dict) -> list[Body]:
    """A rendered function's body, or the bodies of a rendered class's methods, in file lines."""
    source = textwrap.dedent(rendered["source"])
    lines = source.splitlines()
    node = ast.parse(source).body[0]
    if isinstance(node, ast.ClassDef):
        defs = [(f"{rendered['qualname']}.{n.name}", n) for n in node.body if isinstance(n, ast.FunctionDef)]
    else:
        defs = [(rendered["qualname"], node)]
    offset = rendered["first"] - 1
    found = []
    for qualname, fn in defs:
        statements = []
        _statements(fn.body, lines, statements, function_body=True)
        for s in statements:
            s.first, s.last = s.first + offset, s.last + offset
        found.append(Body(qualname, rendered["file"], fn.lineno + offset, fn.end_lineno + offset, statements))
    return found


# ----- the check -----


def _allowed(qualname: str, what: str) -> bool:
    return (qualname, what) in ALLOW or (qualname, "*") in ALLOW


def problems(trace: dict, allow=_allowed) -> list[str]:
    """What in a chapter's trace breaks "what you read is what runs", one message per rendered body."""
    found, seen = [], set()
    for rendered in trace["rendered"]:
        key = (rendered["qualname"], rendered["first"])
        if key in seen:
            continue
        seen.add(key)
        hits = set(trace["hits"].get(rendered["file"], ()))
        is_class = rendered["kind"] == "class"
        ran_in_class = 0
        for body in bodies(rendered):
            ran = [s for s in body.statements if hits & set(range(s.first, s.last + 1))]
            ran_in_class += len(ran)
            if is_class and not ran:
                continue  # a method the chapter does not call
            where = f"{body.qualname} ({body.file}, lines {body.first}-{body.last})"
            missing = [s for s in body.statements if s not in ran and not allow(body.qualname, s.text)]
            if missing:
                shown = "\n".join(f"      {s.first:4d}: {s.text}" for s in missing)
                found.append(f"{where}: {len(missing)} of {len(body.statements)} statements never ran:\n{shown}")
            elif not is_class and len(ran) < 2 and not allow(body.qualname, STUB):
                found.append(f"{where}: only {len(ran)} statement ran: a stub, the work happens out of sight")
        if is_class and ran_in_class < 2 and not allow(rendered["qualname"], STUB):
            found.append(f"{rendered['qualname']} ({rendered['file']}): {ran_in_class} statements of its methods ran")
    return found


def merged(paths) -> dict:
    """One chapter's trace: the kernel's and those of the processes it started."""
    trace = {"rendered": [], "hits": {}}
    for path in paths:
        data = json.loads(Path(path).read_text())
        trace["rendered"] += data["rendered"]
        for key, lines in data["hits"].items():
            trace["hits"][key] = sorted(set(trace["hits"].get(key, [])) | set(lines))
    return trace


def without_trace(chapter: str, session: dict, strict: bool = STRICT) -> tuple[str, str]:
    """("fail" or "skip", why) for a chapter that left no trace."""
    if chapter in session["notebooks"]:
        return "fail", f"{chapter} ran under nbval in this session but left no trace in {session['dir']}"
    if strict and session["full"]:
        return "fail", f"LOSSBOOK_STRICT=1 and the whole book was collected, but {chapter} left no trace"
    return "skip", (f"{chapter} did not run in this session: run it with nbval in the same pytest call "
                    f"(pytest notebooks/{chapter}.ipynb tests/test_rendered_code_runs.py)")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_rendered_code_runs(chapter, request):
    session = getattr(request.config, "lossbook_trace", None) or {"dir": None, "notebooks": [], "full": False}
    paths = sorted(Path(session["dir"]).glob(f"{chapter}.*.json")) if session["dir"] else []
    if not paths:
        verdict, why = without_trace(chapter, session)
        pytest.fail(why) if verdict == "fail" else pytest.skip(why)
    trace = merged(paths)
    assert trace["rendered"], f"{chapter} renders nothing with show_source"
    found = problems(trace)
    assert not found, f"chapter {chapter}: what the reader is shown is not what runs:\n  " + "\n  ".join(found)


def test_a_missing_trace_skips_only_where_the_chapter_was_not_asked_for():
    part = {"dir": "/tmp/t", "notebooks": ["00_how_to_read_this_book"], "full": False}
    book = {"dir": "/tmp/t", "notebooks": CHAPTERS, "full": True}
    assert without_trace("00_how_to_read_this_book", part, strict=False)[0] == "fail"  # ran, no trace
    assert without_trace("01_cross_entropy", part, strict=False)[0] == "skip"
    assert without_trace("01_cross_entropy", part, strict=True)[0] == "skip"  # conftest deselects it instead
    assert without_trace("01_cross_entropy", book, strict=True)[0] == "fail"


# ----- the check itself, on synthetic code -----

SYNTHETIC = '''
def _impl(x):
    return x + 1


def delegates(x):
    """A docstring."""
    return _impl(x)


def fast_path(x, fast=True):
    """The shown arithmetic never runs when fast is true."""
    if fast:
        return _impl(x)
    y = x * 2
    return y + 1


def honest(x, check=True):
    """Every statement runs; the error branch and the handler need not."""
    if check and x < 0:
        message = f"x must be >= 0, got {x}"
        raise ValueError(message)
    try:
        y = int(
            x
        )
    except TypeError:
        y = 0
    for _ in range(2):
        y += 1
    return y


class Tracker:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n

    def unused(self):
        return -1
'''


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """The module above, imported from a package the tracer watches, and a tracer."""
    package = tmp_path / "synthpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "code.py").write_text(SYNTHETIC)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    from lossbook._trace import Tracer  # here: collecting this file need not load torch (the overhead measure)

    module = importlib.import_module("synthpkg.code")
    yield module, Tracer(roots=[package])
    import sys

    sys.modules.pop("synthpkg.code", None)
    sys.modules.pop("synthpkg", None)


def _run(tracer, rendered, calls) -> list[str]:
    for obj in rendered:
        tracer.record(obj)
    tracer.start()
    try:
        calls()
    finally:
        tracer.stop()
    data = json.loads(json.dumps(tracer.snapshot()))  # as the kernel writes it
    return problems(data, allow=lambda *_: False)


def test_a_delegating_stub_fails(synthetic):
    module, tracer = synthetic
    found = _run(tracer, [module.delegates], lambda: [module.delegates(i) for i in range(3)])
    assert len(found) == 1 and "a stub" in found[0] and "delegates" in found[0], found


def test_a_fast_path_that_skips_the_shown_arithmetic_fails(synthetic):
    module, tracer = synthetic
    found = _run(tracer, [module.fast_path], lambda: module.fast_path(3))
    assert len(found) == 1 and "2 of 4 statements never ran" in found[0], found
    assert "y = x * 2" in found[0] and "return y + 1" in found[0]


def test_the_shown_path_taken_once_passes_and_error_branches_are_exempt(synthetic):
    module, tracer = synthetic
    assert _run(tracer, [module.fast_path, module.honest], lambda: (module.fast_path(3, fast=False), module.honest(2),
                                                                    module.fast_path(1))) == []


def test_a_class_checks_the_methods_the_chapter_calls(synthetic):
    module, tracer = synthetic
    assert _run(tracer, [module.Tracker], lambda: module.Tracker().add(2)) == []  # unused() is not called
    found = _run(type(tracer)(roots=tracer.roots), [module.Tracker], lambda: None)
    assert len(found) == 1 and "0 statements of its methods ran" in found[0], found


def test_hot_code_stops_being_line_traced_once_every_line_ran(synthetic):
    module, tracer = synthetic
    _run(tracer, [], lambda: [module.fast_path(i) for i in range(100)])
    assert tracer._codes[module.fast_path.__code__] is not True  # its last two lines never ran
    assert module.delegates.__code__ not in tracer._codes  # never called
    _run(tracer, [], lambda: [module.honest(i) for i in range(100)])
    assert tracer._codes[module.honest.__code__] is True  # the raise and the handler need not run
    _run(tracer, [], lambda: [module.Tracker().add(1) for i in range(100)])
    assert tracer._codes[module.Tracker.add.__code__] is True
