"""A full disk, recognised wherever the write failed: one clear message instead of an OSError.

Plugins write through many libraries (the Trainer, safetensors, tokenizers); none of them says
more than "No space left on device", often without the file. The executor and the CLI turn any
failure caused by ENOSPC / EDQUOT into ``DiskFull`` with the file (or the folder) and its free space.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from entity_training.errors import DiskFull

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Libraries written in Rust or C++ (safetensors, tokenizers) raise their own types with the OS text.
_DISK_FULL_TEXTS = {os.strerror(code): code for code in DISK_FULL_ERRNOS}


def format_size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def existing_parent(path: Path) -> Path:
    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def disk_full_cause(error: BaseException) -> tuple[int, str | None] | None:
    """(errno, the file when known) of a full disk in ``error`` or in the errors that led to it."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current.errno, current.filename or current.filename2
        code = next((c for text, c in _DISK_FULL_TEXTS.items() if text in str(current)), None)
        if code is not None:
            return code, None
        current = current.__cause__ or current.__context__
    return None


def as_disk_full(error: BaseException, *, run_dir: Path | None, writer: str | None = None) -> DiskFull | None:
    """``DiskFull`` with what to do when ``error`` comes from a full disk, else None.

    ``run_dir``: where to measure the free space when the library did not name the file;
    ``writer``: who was writing (plugin and stage), when known.
    """
    if isinstance(error, DiskFull):
        return error
    cause = disk_full_cause(error)
    if cause is None:
        return None
    code, written = cause
    target = Path(str(written)) if written else run_dir
    what = "the disk quota is exceeded" if code == errno.EDQUOT else "the disk is full"
    place = str(written) if written else (f"its files in {run_dir}" if run_dir else "its files")
    resume = f" --resume {run_dir}" if run_dir else " --resume"
    disk_full = DiskFull(
        f"{what}: {writer or 'the run'} could not write {place}{_free_space(target)}. Earlier checkpoints, "
        "exports and the run state are intact (each is written under a temporary name and renamed only "
        f"when complete). Free some space on that disk and continue with{resume}, or start the run again "
        "with --output on a disk with room."
    )
    disk_full.__cause__ = error
    return disk_full


def _free_space(target: Path | None) -> str:
    if target is None:
        return ""
    folder = existing_parent(target)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" ({format_size(free)} free in {folder})"
