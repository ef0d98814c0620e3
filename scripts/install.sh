#!/usr/bin/env bash
# Installs synister into ./.venv. With --test, also what the test suite and the docs site
# (mkdocs, scripts/test.sh builds it) need.
# On a machine without CUDA it installs a CPU build of torch first (pip would otherwise
# pull a multi-GB CUDA build); with CUDA, pip chooses the torch build itself.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test,docs]"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1 && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q torch \
        --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/python -m pip install -q -e ".${extras}"
echo "synister installed in $(pwd)/.venv"
