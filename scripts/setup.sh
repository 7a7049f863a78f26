#!/usr/bin/env bash
# Set up .venv with everything the book and its tests need. Safe to run again.
#   PYTHON=python3.12 bash scripts/setup.sh   picks the interpreter for a new .venv
# A torch already in .venv (your GPU build) is kept; otherwise torch==2.13.0 is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "lossbook setup: creating .venv with ${PYTHON:-python3}"
    "${PYTHON:-python3}" -m venv .venv
fi
py=.venv/bin/python
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "lossbook setup: installing torch==${LOSSBOOK_TORCH_VERSION:-2.13.0}"
    "$py" -m pip install --quiet "torch==${LOSSBOOK_TORCH_VERSION:-2.13.0}"
fi
echo "lossbook setup: installing lossbook with its notebook, upstream and test dependencies"
"$py" -m pip install --quiet -e ".[upstream,test]"
"$py" - <<'PY'
import torch
print(f"lossbook setup: done (torch {torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'})")
PY
