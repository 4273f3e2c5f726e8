"""The memory resource: run state shared by plugins, persisted for ``--resume``.

Every JSON-serialisable entry is written atomically to ``memory.json`` after each stage; a
pydantic model is written as its JSON dump with its class's import path, and validated into that
class again on load. Large data stays on disk and memory holds its path. Entries that are not
JSON (models) live only in this process; a stage that wrote one is re-run on resume, because
skipping it would leave its consumers without their input.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from entity_training.errors import ConfigError, Problem
from entity_training.secrets import redact_json_text

MEMORY_FILE = "memory.json"
_FORMAT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_NOT_JSON = object()


def _as_json_data(value: Any) -> Any:
    """The value as JSON data (a pydantic model as its JSON dump), or _NOT_JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return _NOT_JSON
    return value


def _type_tag(value: Any) -> str:
    return f"{type(value).__module__}:{type(value).__qualname__}"


def _restore_model(tag: str, data: Any) -> BaseModel | None:
    """The pydantic model ``tag`` names, validated from its JSON dump; None when the class is gone
    or no longer accepts the data (the stage that wrote it then runs again)."""
    module_name, _, qualname = tag.partition(":")
    try:
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return cls.model_validate(data)
    except (ImportError, AttributeError, TypeError, ValidationError):
        return None


class Memory:
    """Key/value store scoped to one run. Thread-safe: training writes from a worker thread."""

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}
        self._writer: dict[str, str] = {}  # key -> stage that wrote it
        self.completed_stages: list[str] = []
        self._lock = threading.RLock()

    def set(self, key: str, value: Any, *, stage: str | None = None) -> None:
        with self._lock:
            self._entries[key] = value
            if stage:
                self._writer[key] = stage

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._entries.get(key, default)

    def has(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def mark_stage_done(self, stage: str) -> None:
        with self._lock:
            if stage not in self.completed_stages:
                self.completed_stages.append(stage)

    def to_json(self) -> dict[str, Any]:
        """memory.json's content: the JSON-serialisable entries and what resume needs to know."""
        with self._lock:
            data = {k: _as_json_data(v) for k, v in self._entries.items()}
            persisted = {k: v for k, v in data.items() if v is not _NOT_JSON}
            return {
                "version": _FORMAT_VERSION,
                "completed_stages": list(self.completed_stages),
                "writers": dict(self._writer),
                "volatile": {k: self._writer.get(k) for k in self._entries if k not in persisted},
                "models": {k: _type_tag(v) for k, v in self._entries.items() if isinstance(v, BaseModel)},
                "entries": persisted,
            }

    def to_json_text(self) -> str:
        with self._lock:  # training writes from a worker thread
            return json.dumps(self.to_json(), indent=2, allow_nan=True)

    def save(self, run_dir: Path) -> None:
        atomic_write_text(Path(run_dir) / MEMORY_FILE, redact_json_text(self.to_json_text()))

    @classmethod
    def load(cls, run_dir: Path) -> Memory:
        """Restore a run's memory. A missing file gives an empty memory; a corrupt one is an error."""
        path = Path(run_dir) / MEMORY_FILE
        memory = cls()
        if not path.exists():
            return memory
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["entries"]
            completed = list(data.get("completed_stages", []))
            writers = dict(data.get("writers", {}))
            volatile = dict(data.get("volatile", {}))
            models = dict(data.get("models", {}))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                Problem(
                    f"the saved run state is unreadable ({exc}). Delete it to restart the "
                    "stages from scratch (checkpoints and caches are kept), or run without --resume.",
                    file=str(path),
                )
            ) from exc
        memory._entries = dict(entries)
        memory._writer = writers
        for key, tag in models.items():
            restored = _restore_model(tag, memory._entries.pop(key, None))
            if restored is None:
                volatile[key] = writers.get(key)
            else:
                memory._entries[key] = restored
        # Stages that produced in-process-only values must run again to rebuild them.
        rerun = set(volatile.values())
        memory.completed_stages = [s for s in completed if s not in rerun]
        return memory
