#!/usr/bin/env bash
# Set up .venv and open the book in JupyterLab. Extra arguments go to jupyter lab (e.g. --no-browser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
root_flag=()
[ "$(id -u)" = 0 ] && root_flag=(--allow-root)   # containers often run as root; JupyterLab refuses without it
# rooted at the repository (so links between chapters work and lossbook/ is browsable), opening chapter 00
exec .venv/bin/jupyter lab --ServerApp.root_dir="$PWD" \
    --LabApp.default_url=/lab/tree/notebooks/00_how_to_read_this_book.ipynb "${root_flag[@]}" "$@"
