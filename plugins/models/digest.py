"""The sha256 of a large file, remembered per (path, size, mtime, inode) so that it is read only once.

Hashing a multi-GB model file takes seconds to minutes; the memo lets every later run skip it
while any change of the file (rewritten, replaced, touched) still gets a fresh digest.
"""

from __future__ import annotations

import json
from pathlib import Path

from entity_training.memory import atomic_write_text
from plugins.data.tokenized import file_digest


def memoised_sha256(path: Path, index_file: Path) -> str:
    """The file's sha256, read from ``index_file`` when the file is unchanged since it was hashed."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    index = _read_index(index_file)
    if key in index:
        return index[key]
    digest = file_digest(path)
    # Entries of files that changed since are dropped; a concurrent writer may lose an entry,
    # which costs one more hash later, never a wrong digest.
    index = {k: v for k, v in _read_index(index_file).items() if not k.startswith(f"{path}|")}
    index[key] = digest
    atomic_write_text(index_file, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return digest


def _read_index(index_file: Path) -> dict[str, str]:
    try:
        data = json.loads(Path(index_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
