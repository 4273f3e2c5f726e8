"""Keep the tokenized cache bounded: the least recently used entries go first, never one in use.

Recency is the modification time of an entry's manifest, refreshed on every hit. In use means that
a live process holds a shared lock on ``.locks/<key>.use``: taken before the entry is checked and
kept until the process exits, so that a training run's memory-mapped arrays (and any later
re-open by evaluation) stay valid. The pruner removes only entries whose lock it can take
exclusively without waiting. Without ``fcntl`` (Windows) use cannot be seen, so nothing is pruned.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from plugins.data.cache import MANIFEST

LOCKS = ".locks"
HELD_LIMIT = 32  # entries one process keeps marked as in use; the oldest marks are dropped first
_held: dict[str, IO[str]] = {}


@dataclass(frozen=True)
class Removed:
    key: str
    bytes: int


def hold(cache_dir: Path, key: str) -> None:
    """Mark the entry ``key`` as in use by this process until it exits (waits while it is being pruned)."""
    path = cache_dir / LOCKS / f"{key}.use"
    if fcntl is None or str(path) in _held:
        return
    try:
        handle = _locked(path, fcntl.LOCK_SH)
    except OSError:  # a read-only cache: nobody can prune it either
        return
    if handle is not None:
        _held[str(path)] = handle
    while len(_held) > HELD_LIMIT:
        _held.pop(next(iter(_held))).close()


def mark_used(entry: Path) -> None:
    try:
        os.utime(entry / MANIFEST)
    except OSError:
        pass


def prune(cache_dir: Path, *, keep: int, protect: str) -> list[Removed]:
    """Remove the least recently used entries beyond ``keep`` (``protect`` always stays); return them.

    Also removes what crashed builds left behind (staging and trash folders no live build owns).
    """
    if fcntl is None:
        return []
    _remove_abandoned_builds(cache_dir)
    entries = [path for path in cache_dir.iterdir() if path.is_dir() and not path.name.startswith(".")]
    entries.sort(key=lambda path: (path.name != protect, -_last_used(path)))
    removed = []
    for entry in entries[keep:]:
        if entry.name == protect:
            continue
        lock = cache_dir / LOCKS / f"{entry.name}.use"
        handle = _locked(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if handle is None:  # in use by a live process: it stays
            continue
        try:
            size = _size(entry)
            _remove_folder(cache_dir, entry)
            # Unlinked while held: a process waiting on the old file sees it replaced and retries.
            lock.unlink(missing_ok=True)
            (cache_dir / LOCKS / f"{entry.name}.lock").unlink(missing_ok=True)
        finally:
            handle.close()
        removed.append(Removed(entry.name, size))
    return removed


def _locked(path: Path, mode: int) -> IO[str] | None:
    """``path`` opened and locked with ``mode``; None when LOCK_NB and someone else holds it.

    A pruner may unlink the file between our open and our lock: then lock the new file instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a")
        try:
            fcntl.flock(handle, mode)
        except BlockingIOError:
            handle.close()
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return handle
        handle.close()


def _remove_abandoned_builds(cache_dir: Path) -> None:
    """Staging (``.<key>.*.tmp``) and trash (``.<key>.*.old``) folders whose key nobody is building."""
    for leftover in cache_dir.glob(".*.*"):
        if not leftover.is_dir() or not leftover.name.endswith((".tmp", ".old")):
            continue
        key = leftover.name[1:].split(".", 1)[0]
        handle = _locked(cache_dir / LOCKS / f"{key}.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)
        if handle is None:  # a live build of that key
            continue
        try:
            shutil.rmtree(leftover, ignore_errors=True)
        finally:
            handle.close()


def _remove_folder(cache_dir: Path, entry: Path) -> None:
    """Rename first, so that nobody ever sees a half-deleted entry under its key."""
    trash = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{entry.name}.", suffix=".old"))
    os.replace(entry, trash / "entry")
    shutil.rmtree(trash, ignore_errors=True)


def _last_used(entry: Path) -> int:
    try:
        return (entry / MANIFEST).stat().st_mtime_ns
    except OSError:  # no manifest (broken): as old as the folder
        return entry.stat().st_mtime_ns


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
