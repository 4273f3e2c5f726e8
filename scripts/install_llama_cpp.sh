#!/usr/bin/env bash
# Install llama-cpp-python (the gguf extra: runs exported GGUF files) from a portable build.
#
#   bash scripts/install_llama_cpp.sh [PYTHON]      # default: .venv/bin/python
#
# Its source build defaults to -march=native. Two problems follow, both silent until a run dies:
# - On Intel CPUs with AMX (Sapphire Rapids and later) llama.cpp moves q8_0/q4 weights to its
#   AMX kernels, which segfault on the first token (measured here with 0.3.36 on every q8_0 GGUF;
#   ggml-org/llama.cpp#20824); f16 and f32 files run.
# - pip's wheel cache is keyed by the source archive, not by the CPU: a wheel built natively on
#   one machine is reused on another whose CPU lacks some of its instructions.
# So the wheel is built once with GGML_NATIVE=OFF (AVX2/FMA/F16C kernels, which run on any x86-64
# CPU of the last decade), kept in our own cache, and installed from there. The first build takes
# 4 minutes on 2 idle cores (measured). LLAMA_CPP_CMAKE_ARGS replaces the build flags, e.g. for CUDA:
#   LLAMA_CPP_CMAKE_ARGS="-DGGML_CUDA=on" bash scripts/install_llama_cpp.sh
set -euo pipefail

PYTHON="${1:-.venv/bin/python}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
CMAKE_FLAGS="${LLAMA_CPP_CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF}"
FLAGS_ID="$(printf '%s' "${CMAKE_FLAGS}" | sha256sum | cut -c1-12)"
WHEELS="${ENTITY_TRAINING_CACHE:-${HOME}/.cache/entity-training}/wheels/llama-cpp-python-${VERSION}-${FLAGS_ID}"

installed="$("${PYTHON}" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))" 2>/dev/null || true)"
marker="$("${PYTHON}" -c "import llama_cpp, pathlib; p = pathlib.Path(llama_cpp.__file__).with_name('entity_training_build'); print(p.read_text().strip() if p.exists() else '')" 2>/dev/null || true)"
if [ "${installed}" = "${VERSION}" ] && [ "${marker}" = "${FLAGS_ID}" ]; then
  exit 0
fi

if ! ls "${WHEELS}"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python ${VERSION} (portable: ${CMAKE_FLAGS}); a few minutes the first time ..."
  mkdir -p "${WHEELS}"
  staging="$(mktemp -d "${WHEELS}.XXXXXX")"
  CMAKE_ARGS="${CMAKE_FLAGS}" "${PYTHON}" -m pip wheel --quiet --no-cache-dir --no-deps -w "${staging}" \
    "llama-cpp-python==${VERSION}"
  mv "${staging}"/llama_cpp_python-*.whl "${WHEELS}/"
  rm -rf "${staging}"
fi
# Replace any other build of the same version (e.g. a native one from pip's cache), then add its
# dependencies.
"${PYTHON}" -m pip install --quiet --force-reinstall --no-deps "${WHEELS}"/llama_cpp_python-*.whl
"${PYTHON}" -m pip install --quiet "${WHEELS}"/llama_cpp_python-*.whl
# A note of the flags this copy was built with, so that the next run knows it is ours.
"${PYTHON}" -c "import llama_cpp, pathlib; pathlib.Path(llama_cpp.__file__).with_name('entity_training_build').write_text('${FLAGS_ID}\n')"
