"""No number a cell computes is typed into a chapter's prose.

A decimal in a markdown cell is either glued from a cell (myst-nb's {glue:text}`name`, which the HTML book renders),
a citation (Eq. 4.7, §3.1, a package version that must equal the pinned one), or one of the short list of
definitions and stated targets below, each with its reason. Anything else is a computed number typed by hand, which
goes stale the day a kernel, a seed or an upstream release moves it: print it from a cell instead.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DECIMAL = re.compile(r"(?<![\w.{-])\d+\.\d+(?:e[-+]?\d+)?")
# what is not prose: code spans, link targets, HTML tags, glue roles (maths is prose: $\\lambda = 6.74$ is typed)
NOT_PROSE = [re.compile(p, re.S) for p in (r"\{glue(?::\w+)?\}`[^`]*`", r"\]\([^)]*\)", r"<[^>]*>",
                                           r"\b\d+\.\d+\.\d+\.\d+\b")]
CODE = re.compile(r"`([^`]*)`")  # a code span is not prose, but one without digits (`transformers`) reads as its name
CITATION = re.compile(r"(?:Eqs?\.|§|[Ss]ection|Theorem|Algorithm|Table|Figure|Lemma|Appendix)\s*$")
CLOSED_FORM = re.compile(r"\\approx\s*[-+]?$")  # $\ln 3 \approx 1.0986$: the value of the closed form beside it
VERSION = re.compile(r"(TRL|trl|transformers|datasets|laplace-torch|torch|PyTorch|sympy|nbgrader)\W{0,3}$")
PACKAGE = {"TRL": "trl", "PyTorch": "torch"}

# chapter -> {number as typed: why it is not a computed result}
ALLOW = {
    "00": {"88.72": "a constant of the float32 format: log of its largest value (cell 9 computes it beside)",
           "11.09": "a constant of the float16 format: log of 65504 (cell 9 computes it beside)"},
    "01": {"0.9": "the demo's target, stated before training and asserted", "0.1": "the demo's target margin"},
    "03": {"0.3": "the explorer's mask rate, an input",
           "0.15": "BERT's masking rate, an input", "0.8": "BERT's share of <mask>, an input",
           "0.1": "BERT's share of random tokens, an input"},
    "04": {"0.95": "a target stated before training, asserted", "0.9": "a target stated before training, asserted",
           "0.5": "an interval's end (sigmoid of 0)", "0.73": "an interval's end, sigmoid(1) to two digits"},
    "05": {"0.98": "a target stated before training, asserted", "0.8": "a target stated before training, asserted"},
    "06": {"0.95": "a target stated before training, asserted", "0.9": "a target stated before training, asserted"},
    "07": {"1.5": "a margin and a coefficient of the toy's true reward, inputs", "0.05": "the tolerance asserted",
           "0.8": "a coefficient of the toy's true reward, an input", "0.5": "a coefficient of the toy's true reward"},
    "08": {"0.1": "laplace-torch's default learning rate, an input", "0.5": "the accuracy of guessing",
           "0.03": "the tolerance asserted above", "1.0": "a target stated before running, asserted",
           "0.3": "the tolerance asserted above", "2.5": "a constant of the toy's true reward, an input"},
    "09": {"0.3": "the test's beta, an input", "0.5": "the accuracy of chance", "0.1": "beta, an input",
           "0.8": "a probability in a worked example, an input", "0.2": "a probability in a worked example"},
    "10": {"0.9": "the EMA decay, an input", "0.02": "the asserted margin"},
    "11": {"0.2": "chapter 02's dropout, an input", "1.13": "Liger's published figure, cited",
           "16.8": "arithmetic of the stated shape: 8 x 4096 x 128256 x 4 bytes"},
    "12": {"0.5": "the per-rank mean's weights over 2 ranks, exact", "0.145": "19/131, printed by sympy's cell",
           "0.855": "112/131, printed by sympy's cell", "0.05": "the drift the test asserts"},
}


def prose_numbers(source: str) -> list[tuple[str, str]]:
    """The decimals of one markdown cell that are neither glued nor inside code or maths: [(number, before)]."""
    source = NOT_PROSE[0].sub(" ", source)
    source = CODE.sub(lambda m: " " if re.search(r"\d", m.group(1)) else m.group(1), source)
    for pattern in NOT_PROSE[1:]:
        source = pattern.sub(" ", source)
    return [(m.group(), source[max(0, m.start() - 30):m.start()]) for m in DECIMAL.finditer(source)]


def _pins():
    sys.path.insert(0, str(ROOT / "scripts"))
    import lock  # scripts/lock.py: reads constraints.txt

    return {**lock.read(), **lock.read(ROOT / "requirements-laplace.txt"), "torch": lock.TORCH}


def unexplained(chapter: str, cells: list[str], pins: dict[str, str]) -> tuple[list[str], set[str]]:
    """Typed numbers of one chapter's markdown that no rule allows, and the allow-list entries it used."""
    bad, used = [], set()
    for index, source in enumerate(cells):
        for number, before in prose_numbers(source):
            version = VERSION.search(before)
            if version:
                name = canonicalize_name(PACKAGE.get(version.group(1), version.group(1)))
                if pins.get(name, "").split(".")[:number.count(".") + 1] != number.split("."):
                    bad.append(f"cell {index}: {version.group(1)} {number} is not the pinned {name}=={pins.get(name)}")
                continue
            if CITATION.search(before) or CLOSED_FORM.search(before):
                continue
            if number in ALLOW.get(chapter, {}):
                used.add(number)
                continue
            bad.append(f"cell {index}: {number!r} after {before[-30:]!r}")
    return bad, used


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_computed_number_is_typed_into_the_prose(path):
    chapter = path.name[:2]
    nb = json.loads(path.read_text())
    cells = ["".join(c["source"]) if c["cell_type"] == "markdown" else "" for c in nb["cells"]]
    bad, used = unexplained(chapter, cells, _pins())
    assert not bad, (f"{path.name}: decimals typed into markdown (print them from a cell or glue them; a definition "
                     f"or target goes in tests/test_prose_numbers.py's ALLOW with its reason):\n  " + "\n  ".join(bad))
    stale = set(ALLOW.get(chapter, {})) - used
    assert not stale, f"{path.name}: ALLOW lists {sorted(stale)}, which the chapter no longer types"


def test_the_scanner_catches_a_typed_result_and_a_stale_version():
    pins = {"trl": "1.16.0"}
    cells = ["The ReLU model's ratio is 10.89 (`x = 1.5`, {glue:text}`ratio`, $\\ln 3 \\approx 1.0986$), "
             "$\\lambda = 6.74$.",
             "TRL 1.16 and TRL 1.15 (Eq. 4.7); `trl` 1.1 on 127.0.0.1."]
    bad, _ = unexplained("99", cells, pins)
    assert len(bad) == 4 and "'10.89'" in bad[0] and "'6.74'" in bad[1], bad
    assert "1.15" in bad[2] and "trl 1.1 " in bad[3], bad
