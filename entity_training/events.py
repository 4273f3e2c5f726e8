"""Run events: one bus, many sinks (the console, ``events.jsonl``, tests).

Thread-safe, because training emits from a worker thread while the event loop keeps running.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from entity_training.secrets import redact

Event = dict[str, Any]
Sink = Callable[[Event], None]

# Event types emitted by the executor and plugins.
RUN_START = "run_start"
RUN_END = "run_end"
STAGE_START = "stage_start"
STAGE_END = "stage_end"
PLUGIN_START = "plugin_start"
PLUGIN_END = "plugin_end"
PROGRESS = "progress"
METRICS = "metrics"
LOG = "log"
WARNING = "warning"


class EventBus:
    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()

    def subscribe(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def emit(self, event_type: str, **data: Any) -> Event:
        event: Event = redact({"type": event_type, "time": time.time(), **data})
        with self._lock:
            for sink in self._sinks:
                sink(event)
        return event


class JsonlSink:
    """Appends each event as one JSON line; values that are not JSON are written as strings."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self._handle.write(json.dumps(event, default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
