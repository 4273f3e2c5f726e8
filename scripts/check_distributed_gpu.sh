#!/usr/bin/env bash
# Run DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3 on this machine's CUDA GPUs with the shipped
# accelerate configs, on the built-in tiny model (a few minutes each, most of it start-up), and
# compare each final model with one process trained on the same rows.
#
#   bash scripts/check_distributed_gpu.sh                 # every GPU; needs `pip install deepspeed` for ZeRO
#   GPUS=2 bash scripts/check_distributed_gpu.sh ddp fsdp # two GPUs, two of the configs
#
# Each config trains full fine-tuning for 6 steps (a checkpoint every 3) in fp32 with batch 1 per
# GPU and no gradient accumulation; the reference is one process with batch GPUS on one GPU. Prints, per config: the exit
# status, the world size, and the largest difference of the final model's logits from the
# reference's on a fixed input (CPU runs of the same pairing differ by up to 2.1e-5 with gradient
# clipping, 1.2e-6 without: see tests/reliability/test_sharded_training.py). Logs and run
# directories are under $OUT (default outputs/distributed-check).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
GPUS="${GPUS:-$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')}"
OUT="${OUT:-outputs/distributed-check}"
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(ddp fsdp deepspeed_zero2 deepspeed_zero3)
if [ "$GPUS" -lt 1 ]; then
    echo "no CUDA GPU found: this script checks the GPU launch configs (the CPU ones run in tests/reliability/)" >&2
    exit 2
fi
mkdir -p "$OUT"
# Rows of 128 tokens and no accumulation: the 6 steps stay inside the first epoch for up to 8 GPUs
# (48 of ~80 rows), where both sides train on the same rows; across an epoch boundary they would not.
settings=(--model tiny --method full --max-steps 6 --save-steps 3 --set training_config.precision=fp32
          --set training_config.gradient_accumulation_steps=1 --set data_preparation.max_seq_length=128 --yes)

echo "machine: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort | uniq -c | xargs), $GPUS GPU(s) used; load: $(uptime)"
CUDA_VISIBLE_DEVICES=0 "$PYTHON" train.py --config configs/full_training.yaml "${settings[@]}" \
    --batch-size "$GPUS" --output "$OUT/one-process" > "$OUT/one-process.log" 2>&1 \
    || { echo "the one-process reference failed: $OUT/one-process.log" >&2; exit 1; }

for config in "${CONFIGS[@]}"; do
    started=$SECONDS
    "$PYTHON" -m accelerate.commands.launch --config_file "configs/accelerate/$config.yaml" --num_processes "$GPUS" \
        train.py --config configs/full_training.yaml "${settings[@]}" --batch-size 1 --output "$OUT/$config" \
        > "$OUT/$config.log" 2>&1
    status=$?
    "$PYTHON" - "$OUT/$config" "$OUT/one-process" "$config" "$status" "$((SECONDS - started))" <<'EOF'
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

run, reference, config, status, seconds = sys.argv[1:]
if status != "0":
    print(f"{config}: FAILED (exit {status}, {seconds} s), see {run}.log")
    sys.exit(0)
result = json.loads((Path(run) / "memory.json").read_text())["entries"]["training.result"]
tokens = torch.arange(5, 69).unsqueeze(0)
logits = [AutoModelForCausalLM.from_pretrained(Path(folder) / "final-model")(tokens).logits for folder in (run, reference)]
difference = (logits[0] - logits[1]).abs().max().item()
print(f"{config}: ok in {seconds} s, world size {result['world_size']}, {result['steps']} steps, "
      f"max logit difference from one process {difference:.2e}")
EOF
done
