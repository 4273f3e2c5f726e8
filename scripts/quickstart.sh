#!/usr/bin/env bash
# The README's first command: set up, then run the default workflow end to end (offline, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-gguf}" bash scripts/setup.sh
# A fresh run directory each time, so running the quick start twice keeps both runs.
exec .venv/bin/python train.py --config configs/default.yaml --output "outputs/quickstart-$(date +%Y%m%d-%H%M%S)" --yes "$@"
