#!/usr/bin/env bash
# Set up .venv and run every test: ruff, the unit and parity tests, nbval over every notebook, and the book's
# browser tests (tests/test_book.py builds the book first; Debian's chromium must be installed, else they skip).
# Extra arguments go to pytest (e.g. -k cross_entropy, or notebooks/01_cross_entropy.ipynb).
# Notebook outputs were stored from a CPU run, so tests run on the CPU unless LOSSBOOK_DEVICE says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LOSSBOOK_DEVICE="${LOSSBOOK_DEVICE:-cpu}"
.venv/bin/ruff check lossbook tests notebooks scripts book
.venv/bin/python -m pytest "$@"
