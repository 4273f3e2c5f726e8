"""Disk-space pre-flight for exports: fail before writing gigabytes into a full disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from entity_training import ConfigError, Problem

BYTES_PER_DTYPE = {"float32": 4, "float16": 2, "bfloat16": 2}
_HEADROOM = 1.1  # safetensors headers, tokenizer files, the model card


def existing_parent(path: Path) -> Path:
    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


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


def format_size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"
