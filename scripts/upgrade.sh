#!/usr/bin/env bash
# Renew the pins and show what the new releases change in the book:
#   1. scripts/lock.py resolves today's newest releases within pyproject.toml's ranges into constraints.txt
#      (and prints each version that moved);
#   2. scripts/setup.sh installs exactly them;
#   3. nbval runs every notebook against the outputs stored with the old pins: each failure it lists is a
#      checked output the upgrade changed (not fatal here: read them, then fix the chapter or keep the change);
#   4. scripts/execute_notebooks.py re-executes every notebook in place, and git diff --stat shows which moved.
# Then run bash scripts/test.sh, both kernel passes (README: "The same check as CI"), and commit constraints.txt
# with the notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python scripts/lock.py
bash scripts/setup.sh
export LOSSBOOK_DEVICE=cpu
echo "upgrade: checked outputs that the new pins change (nbval against the stored outputs):"
.venv/bin/python -m pytest notebooks -q --no-header -rf || true
.venv/bin/python scripts/execute_notebooks.py
git diff --stat -- constraints.txt notebooks
