"""Shared test set-up.

LOSSBOOK_STRICT=1 (set by .ci/run) turns every skip into a failure, so an
optional part that CI is meant to have (transformers, later trl,
laplace-torch and a browser) can never go missing silently.  Skips whose
reason starts with "hardware:" (a GPU test on a CPU machine) stay skips.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Nothing in the tests may reach for the Hugging Face hub: the offline switches are set before any HF library
# (transformers, datasets, trl, huggingface_hub) is imported, which is when they are read.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")

STRICT = os.environ.get("LOSSBOOK_STRICT", "") not in ("", "0")


def require(module: str, why: str, install: str = "pip install -e '.[upstream]'"):
    """Import an optional module, or skip with a clear reason (a failure under LOSSBOOK_STRICT)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pytest.skip(f"{module} is not installed ({err}); {why}. Install it with: {install}")


@pytest.fixture(scope="session")
def hf_loss_utils():
    """transformers' loss module, the upstream reference of chapters 01-06."""
    return require("transformers.loss.loss_utils", "needed for parity with Hugging Face transformers")


@pytest.fixture(scope="session")
def trl():
    """TRL, the upstream reference of the preference chapters (07 reward models, 09 DPO, 10 SPIN)."""
    return require("trl", "needed for parity with TRL")


@pytest.fixture(scope="session")
def laplace():
    """laplace-torch, the upstream reference of chapter 08 (Bayesian reward models)."""
    install = "bash scripts/setup.sh (pip install --no-deps -r requirements-laplace.txt; that file says why)"
    return require("laplace", "needed for parity with laplace-torch", install)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "hardware:" not in reason:
            report.outcome = "failed"
            report.longrepr = f"LOSSBOOK_STRICT=1 forbids this skip: {reason}"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, through Playwright (tests/_browser.py); skips with the reason when missing."""
    import _browser

    with _browser.launch() as chromium:
        yield chromium


# ----- "what you read is what runs" (issue 23; tests/test_rendered_code_runs.py) -----
# When the session collects that test file and notebooks, the nbval kernels trace lossbook (lossbook/_trace.py):
# LOSSBOOK_TRACE_DIR and LOSSBOOK_TRACE_NAME (the notebook) are in os.environ while a notebook's cells run, so the
# kernel nbval starts for it inherits them; the test's items run after every notebook and read the traces. Other
# tests (and the portable-kernel pass, which does not collect the test file) run untraced.
TRACE_TEST = "test_rendered_code_runs.py"


class _NotebookTracePlugin:
    """Global (not path-scoped like this conftest's hooks), so it sees the notebook items too."""

    def __init__(self, directory: str):
        self.directory = directory

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        ENV_DIR, ENV_NAME = "LOSSBOOK_TRACE_DIR", "LOSSBOOK_TRACE_NAME"  # lossbook/_trace.py's (torch not loaded here)
        if item.path.suffix == ".ipynb":  # before nbval's set-up starts the notebook's kernel
            os.environ[ENV_DIR] = self.directory
            os.environ[ENV_NAME] = item.path.stem
        else:
            os.environ.pop(ENV_DIR, None)
            os.environ.pop(ENV_NAME, None)

    def pytest_unconfigure(self, config):
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: these are the items that run
def pytest_collection_modifyitems(session, config, items):
    checks = [i for i in items if i.path.name == TRACE_TEST]
    if not checks:
        return
    items[:] = [i for i in items if i.path.name != TRACE_TEST] + checks  # after the notebooks
    notebooks = sorted({i.path.stem for i in items if i.path.suffix == ".ipynb"})
    chapters = {p.stem for p in (Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    directory = tempfile.mkdtemp(prefix="lossbook-trace-") if notebooks else None
    config.lossbook_trace = {"dir": directory, "notebooks": notebooks, "full": chapters <= set(notebooks)}
    if directory:
        config.pluginmanager.register(_NotebookTracePlugin(directory), "lossbook-notebook-trace")
    if STRICT and not config.lossbook_trace["full"]:
        # a strict run of part of the book checks the chapters it ran; the others are not its business
        skipped = [i for i in checks if getattr(i, "callspec", None) and i.callspec.params["chapter"] not in notebooks]
        if skipped:
            items[:] = [i for i in items if i not in skipped]
            config.hook.pytest_deselected(items=skipped)
