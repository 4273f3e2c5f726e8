"""Run a fine-tuning workflow: python train.py --config configs/default.yaml"""

import sys

from entity_training.cli import main

if __name__ == "__main__":
    sys.exit(main())
