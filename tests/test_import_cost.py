"""`import lossbook` pays for torch alone: the teaching layers load on first use (PEP 562)."""

import subprocess
import sys

TEACHING = ("sympy", "matplotlib", "ipywidgets", "IPython", "transformers", "trl", "laplace", "scipy")


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_import_lossbook_loads_no_teaching_library():
    loaded = _fresh(f"import sys, lossbook; print(','.join(m for m in {TEACHING!r} if m in sys.modules))")
    assert loaded == "", f"import lossbook loaded {loaded}"


def test_losses_work_without_the_teaching_libraries():
    code = (
        "import sys, torch, lossbook\n"
        "z = torch.randn(2, 3, 5); y = torch.randint(0, 5, (2, 3))\n"
        "lossbook.causal_lm_loss(z, y); lossbook.fixed_cross_entropy(z[0], y[0])\n"
        "lossbook.chunked_cross_entropy(torch.randn(2, 3, 4), torch.randn(5, 4), y, shift=True)\n"
        f"print(','.join(m for m in {TEACHING!r} if m in sys.modules))"
    )
    assert _fresh(code) == ""


def test_teaching_modules_are_attributes_on_first_use():
    code = (
        "import sys, lossbook\n"
        "assert lossbook.derivations.softmax and lossbook.widgets and lossbook.bugzoo.causal_lm\n"
        "assert lossbook.plotting and lossbook.demos.causal_lm and lossbook.checks.compare_losses\n"
        "assert lossbook.show_source and lossbook.RewardLaplace and lossbook.memory.StorageTracker\n"
        "from lossbook import *\n"
        "assert set(lossbook.__all__) <= set(dir(lossbook))\n"
        "print('sympy' in sys.modules, 'matplotlib' in sys.modules)"
    )
    assert _fresh(code) == "True True"


def test_unknown_attribute_is_an_attribute_error():
    out = _fresh("import lossbook\ntry:\n    lossbook.nope\nexcept AttributeError as e:\n    print(e)")
    assert out == "module 'lossbook' has no attribute 'nope'"
