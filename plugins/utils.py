"""Small helpers shared by several plugins."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ENTITY_TRAINING_CACHE"


def cache_root() -> Path:
    """Where built-in models and tokenized datasets are cached (``$ENTITY_TRAINING_CACHE``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "entity-training")
    return Path(root)
