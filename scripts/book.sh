#!/usr/bin/env bash
# Set up .venv and build the HTML book into book/_build/html, from the outputs stored in notebooks/
# (nothing is executed; no network is needed once set up). Extra arguments go to book/build.py:
#   bash scripts/book.sh              build (only what changed)
#   bash scripts/book.sh --all        rebuild every page
#   bash scripts/book.sh --serve      build, then serve the book on http://127.0.0.1:8000/ (--port N to change)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python book/build.py "$@"
