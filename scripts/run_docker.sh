#!/usr/bin/env bash
# Build the image and run a workflow on the GPU(s), keeping data, outputs and caches on the host.
#   scripts/run_docker.sh configs/lora_training.yaml [more train.py arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-configs/default.yaml}"
shift || true
docker build -t entity-training:latest .
mkdir -p outputs data models
exec docker run --rm --gpus all --shm-size 8g \
  -e HF_TOKEN="${HF_TOKEN:-}" \
  -v "$PWD/data:/app/data" -v "$PWD/outputs:/app/outputs" -v "$PWD/models:/app/models" \
  -v entity-training-cache:/cache \
  entity-training:latest --config "$config" --yes "$@"
