"""Reuse parsed datasets: a loaded dataset is stored under a key over its files' bytes and the
loader settings, so an unchanged dataset is not parsed and validated again on the next run.

Values are JSON-like (dicts, lists, strings, numbers), stored with ``marshal``: it loads them
several times faster than ``json`` and, unlike pickle, cannot construct arbitrary objects.
"""

from __future__ import annotations

import gc
import hashlib
import json
import marshal
import os
import tempfile
import time
from pathlib import Path
from typing import Any

# Bump when parsing or normalisation changes what the same files load as.
LOADER_VERSION = "loader-1"
FILE_INDEX = "file-digests.json"
RACY_WINDOW_NS = 2_000_000_000  # coarser than any filesystem's mtime resolution


def key_for(files: list[Path], settings: dict[str, Any], cache_dir: Path) -> str:
    """Hash of every file's path and bytes (all files of a saved-dataset folder) and the settings.

    A file's bytes are hashed again only when its size or modification time changed since the
    last hash (kept in an index, as git does), so an unchanged large dataset is not re-read.
    """
    index = _read_index(cache_dir)
    changed = False
    digest = hashlib.sha256(json.dumps([LOADER_VERSION, marshal.version, settings], sort_keys=True).encode())
    for path in files:
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for member in members:
            name, stat = str(member.resolve()), member.stat()
            known = index.get(name)
            if not _unchanged(known, stat):
                with open(member, "rb") as handle:
                    sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
                known = {**_signature(stat), "hashed_ns": time.time_ns(), "sha256": sha256}
                index[name], changed = known, True
            digest.update(f"{member}\0{known['sha256']}\0".encode())
    if changed:
        # Forget files that are gone, so that the index does not grow with every file ever loaded.
        index = {name: known for name, known in index.items() if os.path.exists(name)}
        _write_bytes(cache_dir, FILE_INDEX, json.dumps(index).encode())
    return digest.hexdigest()[:32]


def _signature(stat: os.stat_result) -> dict[str, int]:
    # ctime changes with every write and cannot be set back (unlike mtime: cp -p, rsync -t).
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}


def _unchanged(known: dict[str, Any] | None, stat: os.stat_result) -> bool:
    """Trust a recorded hash when the file's signature matches, unless the file was changed so
    close to the hashing that a same-size rewrite could share its times (git's "racy" rule)."""
    signature = _signature(stat)
    if not known or any(known.get(field) != value for field, value in signature.items()):
        return False
    return stat.st_ctime_ns + RACY_WINDOW_NS < known.get("hashed_ns", 0)


def _read_index(cache_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        index = json.loads((cache_dir / FILE_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def read(cache_dir: Path, key: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """The stored dict, or None when absent, unreadable or lacking ``fields`` (the caller parses again)."""
    try:
        data = (cache_dir / f"{key}.marshal").read_bytes()
        # Tens of thousands of new objects would set off collections that walk the whole heap
        # (large with torch loaded); none of them can be garbage yet.
        collecting = gc.isenabled()
        gc.disable()
        try:
            value = marshal.loads(data)
        finally:
            if collecting:
                gc.enable()
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return value if isinstance(value, dict) and all(field in value for field in fields) else None


def write(cache_dir: Path, key: str, value: dict[str, Any], *, keep: int | None = None) -> list[str]:
    """Store ``value`` under ``key``; failing to cache never fails the load.

    With ``keep``, then remove the least recently used stored values beyond that many (never
    ``key``) and return their keys.
    """
    try:
        _write_bytes(cache_dir, f"{key}.marshal", marshal.dumps(value))
    except ValueError:  # a value marshal cannot store (e.g. a date from parquet): just not cached
        return []
    return _prune(cache_dir, keep, protect=key) if keep is not None else []


def mark_used(cache_dir: Path, key: str) -> None:
    try:
        os.utime(cache_dir / f"{key}.marshal")
    except OSError:
        pass


def _prune(cache_dir: Path, keep: int, *, protect: str) -> list[str]:
    """A value is read whole and at once, so removing one never breaks a reader: it parses again."""
    stored = []
    for path in cache_dir.glob("*.marshal"):
        try:
            stored.append((path.stem != protect, -path.stat().st_mtime_ns, path))
        except OSError:  # removed meanwhile by another process
            continue
    removed = []
    for *_, path in sorted(stored)[keep:]:
        if path.stem != protect:
            path.unlink(missing_ok=True)
            removed.append(path.stem)
    return removed


def _write_bytes(cache_dir: Path, name: str, data: bytes) -> None:
    """Write atomically (temp file + rename); an unwritable cache is ignored."""
    tmp = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, cache_dir / name)
    except OSError:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
