#!/usr/bin/env bash
# Set up .venv with everything the book and its tests need, at the exact versions of constraints.txt (made by
# scripts/lock.py from pyproject.toml's ranges; bash scripts/upgrade.sh renews it). Safe to run again.
#   PYTHON=python3.12 bash scripts/setup.sh   picks the interpreter for a new .venv
# A torch already in .venv (your GPU build) is kept; otherwise torch==2.13.0 is installed: PyPI's build (CUDA on
# Linux, several GB), or with LOSSBOOK_TORCH=cpu PyTorch's CPU-only build.
# laplace-torch and its torch-dependent requirements come from requirements-laplace.txt with --no-deps (that file
# says why: resolving them would bring a CUDA torchvision/torch and nvidia packages).
# Once set up, a later run installs nothing and needs no network until pyproject.toml, constraints.txt,
# requirements-laplace.txt or this file changes
# (LOSSBOOK_SETUP_FORCE=1 reinstalls anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "lossbook setup: creating .venv with ${PYTHON:-python3}"
    "${PYTHON:-python3}" -m venv .venv
fi
py=.venv/bin/python
# Which torch: PyPI's torch for Linux is the CUDA build (about 18 nvidia packages, several GB). LOSSBOOK_TORCH=cpu
# takes PyTorch's CPU-only wheels instead; LOSSBOOK_TORCH_INDEX_URL names any other wheel index.
torch_spec="torch==${LOSSBOOK_TORCH_VERSION:-2.13.0}"
torch_cmd=("$py" -m pip install --quiet -c constraints.txt "$torch_spec")
case "${LOSSBOOK_TORCH:-}" in
    "") ;;
    cpu) torch_cmd+=(--index-url "${LOSSBOOK_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}") ;;
    *) echo "lossbook setup: LOSSBOOK_TORCH must be empty or 'cpu', got '${LOSSBOOK_TORCH}'" >&2; exit 2 ;;
esac
if [ -n "${LOSSBOOK_TORCH_INDEX_URL:-}" ] && [ -z "${LOSSBOOK_TORCH:-}" ]; then
    torch_cmd+=(--index-url "$LOSSBOOK_TORCH_INDEX_URL")
fi
if [ -n "${LOSSBOOK_SETUP_PRINT_TORCH:-}" ]; then   # print the torch command and stop (the tests read it)
    echo "${torch_cmd[*]}"
    exit 0
fi
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "lossbook setup: installing $torch_spec${LOSSBOOK_TORCH:+ (${LOSSBOOK_TORCH} build)}"
    "${torch_cmd[@]}"
fi
stamp=".venv/.lossbook-setup-$(cat pyproject.toml constraints.txt requirements-laplace.txt scripts/setup.sh | "$py" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')"
if [ -f "$stamp" ] && [ -z "${LOSSBOOK_SETUP_FORCE:-}" ]; then
    echo "lossbook setup: packages up to date"
else
    echo "lossbook setup: installing lossbook with its notebook, upstream, test, book and course dependencies" \
        "(pinned: constraints.txt)"
    # --use-pep517: seqeval (chapter 05's reference) ships only a setup.py sdist, whose legacy build fails
    "$py" -m pip install --quiet --use-pep517 -c constraints.txt -e ".[upstream,test,book,course]"
    # pip may then report "laplace-torch 0.3 requires torchvision, which is not installed" on later installs:
    # expected and harmless (laplace never imports torchvision; tests/test_laplace_install.py checks it)
    echo "lossbook setup: installing laplace-torch with --no-deps (requirements-laplace.txt)"
    "$py" -m pip install --quiet --no-deps -r requirements-laplace.txt
    rm -f .venv/.lossbook-setup-*
    touch "$stamp"
fi
# every installed version is its pin (a hand install or an older .venv may have moved one): reinstall any that differ
drift=$("$py" scripts/lock.py --drift constraints.txt requirements-laplace.txt)
if [ -n "$drift" ]; then
    echo "lossbook setup: reinstalling at their pins:" $drift
    # shellcheck disable=SC2086
    "$py" -m pip install --quiet --no-deps $drift
    "$py" scripts/lock.py --drift constraints.txt requirements-laplace.txt >/dev/null
fi
# the book's browser assets (MathJax, RequireJS, the ipywidgets HTML manager): pinned npm tarballs, cached in
# book/_vendor/ on first use, so the book builds offline afterwards
"$py" book/vendor.py
"$py" - <<'PY'
import torch
print(f"lossbook setup: done (torch {torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'})")
PY
