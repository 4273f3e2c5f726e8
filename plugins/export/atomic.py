"""Write an export into a hidden sibling folder and rename it into place only when complete.

An interrupted or failed export removes its staging folder and leaves whatever was at the
target before (a previous good export) untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from entity_training import ConfigError, Problem


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``final``; on success it replaces ``final``."""
    final = Path(final)
    check_output_folder(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_folder(staging, final)


def publish_folder(staging: Path, final: Path) -> None:
    """Swap ``staging`` in for ``final``; the old folder is removed only after the swap."""
    previous = None
    if final.exists():
        previous = final.parent / f".{final.name}.previous-{os.getpid()}"
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(final, previous)
    os.replace(staging, final)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def check_output_folder(path: Path, *, key: str = "output_path") -> None:
    """An output path must be a folder (or not exist yet), and so must its existing parents."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise ConfigError(
                    Problem(
                        f"the output path {str(path)!r} cannot be used: {str(candidate)!r} is a file, not a "
                        "folder. Point output_path at a folder (it is created if missing).",
                        path=key,
                    )
                )
            return
