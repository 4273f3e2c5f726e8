"""Build a cached folder once, atomically, even when several processes ask for it at once.

The folder is built under a temporary name beside its final place and renamed into place when
complete, so a folder at the final path is always whole. A lock file serialises concurrent
builders (e.g. the ranks of a distributed run): the second one waits, then finds the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no lock; the rename alone still keeps the folder whole
    fcntl = None


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return ``(final, built)``: ``build(tmp)`` fills a temp folder that is renamed to ``final``.

    ``built`` is False when the folder already existed (built earlier or by another process).
    """
    final = Path(final)
    if final.is_dir():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(final.parent / f".{final.name}.lock"):
        if final.is_dir():
            return final, False
        if fcntl is not None:  # holding the lock: leftovers are from builds that were killed
            for leftover in final.parent.glob(f".{final.name}.*.partial"):
                shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            build(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            os.rename(staging, final)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if final.is_dir():  # another process without a lock finished first: use its folder
                return final, False
            raise
    return final, True
