"""Reuse parsed datasets: a loaded dataset is stored under a key over its files' bytes and the
loader settings, so an unchanged dataset is not parsed and validated again on the next run.

Values are JSON-like (dicts, lists, strings, numbers), stored with ``marshal``: it loads them
several times faster than ``json`` and, unlike pickle, cannot construct arbitrary objects.
"""

from __future__ import annotations

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
                known = {
                    "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                    "hashed_ns": time.time_ns(),
                    "sha256": sha256,
                }
                index[name], changed = known, True
            digest.update(f"{member}\0{known['sha256']}\0".encode())
    if changed:
        _write_bytes(cache_dir, FILE_INDEX, json.dumps(index).encode())
    return digest.hexdigest()[:32]


def _unchanged(known: dict[str, Any] | None, stat: os.stat_result) -> bool:
    """Trust a recorded hash when size and mtime match, unless the file was modified so close to
    the hashing that a same-size rewrite could share its mtime (git's "racy" rule)."""
    if not known or known.get("size") != stat.st_size or known.get("mtime_ns") != stat.st_mtime_ns:
        return False
    return stat.st_mtime_ns + RACY_WINDOW_NS < known.get("hashed_ns", 0)


def _read_index(cache_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        index = json.loads((cache_dir / FILE_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def read(cache_dir: Path, key: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """The stored dict, or None when absent, unreadable or lacking ``fields`` (the caller parses again)."""
    try:
        value = marshal.loads((cache_dir / f"{key}.marshal").read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return value if isinstance(value, dict) and all(field in value for field in fields) else None


def write(cache_dir: Path, key: str, value: dict[str, Any]) -> None:
    """Store ``value`` under ``key``; failing to cache never fails the load."""
    try:
        _write_bytes(cache_dir, f"{key}.marshal", marshal.dumps(value))
    except ValueError:  # a value marshal cannot store (e.g. a date from parquet): just not cached
        pass


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
