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
from pathlib import Path
from typing import Any

# Bump when parsing or normalisation changes what the same files load as.
LOADER_VERSION = "loader-1"


def key_for(files: list[Path], settings: dict[str, Any]) -> str:
    """Hash of every file's path and bytes (all files of a saved-dataset folder) and the settings."""
    digest = hashlib.sha256(json.dumps([LOADER_VERSION, marshal.version, settings], sort_keys=True).encode())
    for path in files:
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for member in members:
            digest.update(str(member).encode() + b"\0")
            with open(member, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:32]


def read(cache_dir: Path, key: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """The stored dict, or None when absent, unreadable or lacking ``fields`` (the caller parses again)."""
    try:
        value = marshal.loads((cache_dir / f"{key}.marshal").read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return value if isinstance(value, dict) and all(field in value for field in fields) else None


def write(cache_dir: Path, key: str, value: dict[str, Any]) -> None:
    """Write atomically (temp file + rename); failing to cache never fails the load."""
    tmp = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(marshal.dumps(value))
        os.replace(tmp, cache_dir / f"{key}.marshal")
    except (OSError, ValueError):  # ValueError: a value marshal cannot store (e.g. a date from parquet)
        if tmp:
            Path(tmp).unlink(missing_ok=True)
