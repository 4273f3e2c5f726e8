"""Disk-space pre-flight for exports: fail before writing gigabytes into a full disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from entity_training import ConfigError, Problem
from entity_training.disk import existing_parent, format_size

BYTES_PER_DTYPE = {"float32": 4, "float16": 2, "bfloat16": 2}
_HEADROOM = 1.1  # safetensors headers, tokenizer files, the model card


def require_free_space(folder: Path, needed_bytes: int, what: str, *, key: str = "output_path") -> None:
    """Raise ConfigError when the file system of ``folder`` has less than ``needed_bytes`` free."""
    free = shutil.disk_usage(existing_parent(folder)).free
    needed = int(needed_bytes * _HEADROOM)
    if free < needed:
        raise ConfigError(
            Problem(
                f"not enough disk space for {what}: it needs about {format_size(needed)} in "
                f"{existing_parent(folder)}, which has {format_size(free)} free. Free some space or set "
                "output_path to a larger disk.",
                path=key,
            )
        )
