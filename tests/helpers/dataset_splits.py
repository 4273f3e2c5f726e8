"""Put conversations where dataset_loader leaves them: files in ``<run_dir>/data/``, their entries in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugins import memory_keys
from plugins.data.conversation_files import write_conversations


def store_splits(
    memory: Any, run_dir: Path, *, train: list[dict] | None = None, validation: list[dict] | None = None
) -> None:
    """Write and remember each split given (``None`` leaves that split's entry as it is)."""
    for key, name, conversations in (
        (memory_keys.DATASET_TRAIN, "train", train),
        (memory_keys.DATASET_VALIDATION, "validation", validation),
    ):
        if conversations is not None:
            memory.set(key, write_conversations(run_dir, name, conversations))
