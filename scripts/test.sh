#!/usr/bin/env bash
# Set up .venv and run every test: ruff, the unit and parity tests, nbval over every notebook, and the book's
# browser tests (tests/test_book.py builds the book first; Debian's chromium must be installed, else they skip).
# Extra arguments go to pytest (e.g. -k cross_entropy, or notebooks/01_cross_entropy.ipynb).
# Notebook outputs were stored from a CPU run, so tests run on the CPU unless LOSSBOOK_DEVICE says otherwise.
#
#   bash scripts/test.sh --portable-kernels [pytest arguments]   (default arguments: notebooks)
# runs the notebooks again on PyTorch's portable kernels and MKL's CPU-independent code path
# (ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE, ONEDNN_MAX_CPU_ISA=SSE41), against the same stored outputs:
# a stand-in for another CPU (CI runs both passes; a checked output that holds only on one CPU fails here).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--portable-kernels" ]; then
    shift
    export ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41
    [ $# -gt 0 ] || set -- notebooks
    echo "lossbook test: portable kernels (ATEN_CPU_CAPABILITY=$ATEN_CPU_CAPABILITY MKL_CBWR=$MKL_CBWR" \
        "ONEDNN_MAX_CPU_ISA=$ONEDNN_MAX_CPU_ISA)"
fi
bash scripts/setup.sh
export LOSSBOOK_DEVICE="${LOSSBOOK_DEVICE:-cpu}"
.venv/bin/ruff check lossbook tests notebooks scripts book
.venv/bin/python -m pytest "$@"
