#!/usr/bin/env bash
# Create .venv and install the project with its extras.
# On a CPU-only machine torch is installed first from its CPU build, so that the project's
# `torch` requirement does not pull a multi-GB CUDA build. Set TORCH_SPEC to choose another
# (e.g. TORCH_SPEC="torch" on a CUDA machine), EXTRAS to choose the extras (default: dev,gguf).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-dev,gguf}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "Installing ${TORCH_SPEC} ..."
  .venv/bin/python -m pip install --quiet "${TORCH_SPEC}"
fi
echo "Installing entity-training[${EXTRAS}] (the first build of llama-cpp-python takes several minutes) ..."
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
