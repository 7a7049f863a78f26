"""Shared test set-up.

LOSSBOOK_STRICT=1 (set by .ci/run) turns every skip into a failure, so an
optional part that CI is meant to have (transformers, later trl,
laplace-torch and a browser) can never go missing silently.  Skips whose
reason starts with "hardware:" (a GPU test on a CPU machine) stay skips.
"""

from __future__ import annotations

import importlib
import os

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
