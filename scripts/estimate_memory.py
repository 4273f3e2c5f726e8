"""Print a workflow's memory plan without training (the same as `entity-train plan`).

python scripts/estimate_memory.py configs/default.yaml
python scripts/estimate_memory.py configs/qlora_training.yaml --set training_config.batch_size=8
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entity_training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["plan", *sys.argv[1:]]))
