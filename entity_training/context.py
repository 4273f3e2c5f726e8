"""The context handed to every plugin call: memory, events, tools, the run directory, cancellation.

Memory is a declared hand-off: a plugin reads only the keys it declares (``dependencies``,
``optional_dependencies``, ``provides``) and writes only those it ``provides``. Anything else is a
``PluginError`` when ``ENTITY_TRAINING_STRICT_MEMORY=1`` (the test suite sets it), and otherwise a
warning, once per plugin and key, so that a third-party plugin with incomplete declarations still runs.
The check is on the plugin's own key names; its step's ``memory:`` mapping (``KeyMap``) then says
where each key is in memory.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entity_training import events
from entity_training.distributed import is_main_process
from entity_training.errors import PluginError, RunInterrupted
from entity_training.key_map import KeyMap
from entity_training.secrets import redact
from entity_training.stages import Stage

if TYPE_CHECKING:
    from entity_training.events import EventBus
    from entity_training.memory import Memory
    from entity_training.plugin import Plugin
    from entity_training.registry import ToolRouter

SUMMARY_KEY = "summary"  # written through ``summarize``; run.json's summary
ERROR_KEY = "run.error"  # written by the executor for ERROR-stage plugins: {stage, plugin, type, message}
ENGINE_KEYS = frozenset({SUMMARY_KEY, ERROR_KEY})  # the engine's own entries: any plugin may read them
STRICT_MEMORY_ENV = "ENTITY_TRAINING_STRICT_MEMORY"
_warned: set[tuple[str, str, str]] = set()  # (plugin, access, key) already warned about in this process


def strict_memory() -> bool:
    return os.environ.get(STRICT_MEMORY_ENV, "") not in ("", "0")


@dataclass(frozen=True)
class HandOffs:
    """The memory keys a plugin declared (what it may read and write) and where its step keeps them."""

    reads: frozenset[str]
    writes: frozenset[str]
    strict: bool | None = None  # None: the environment (ENTITY_TRAINING_STRICT_MEMORY) decides
    key_map: KeyMap = field(default_factory=KeyMap)  # the step's `memory:` mapping

    @classmethod
    def of(cls, plugin: Plugin, *, strict: bool | None = None, key_map: KeyMap | None = None) -> HandOffs:
        writes = frozenset(plugin.provides)
        reads = frozenset((*plugin.dependencies, *plugin.optional_dependencies)) | writes
        return cls(reads, writes, strict, key_map or KeyMap())

    def in_memory(self, key: str) -> str:
        """Where the plugin's ``key`` is in memory; the engine's own keys are never mapped."""
        return key if key in ENGINE_KEYS else self.key_map(key)


class PluginContext:
    """What a plugin may touch. Plugins never import each other: they share state through memory."""

    def __init__(
        self,
        *,
        memory: Memory,
        bus: EventBus,
        tools: ToolRouter,
        run_dir: Path,
        stage: Stage,
        plugin_name: str,
        cancel_event: threading.Event,
        run_settings: dict[str, Any] | None = None,
        resume: bool = False,
        hand_offs: HandOffs | None = None,
    ):
        self._memory = memory
        self._bus = bus
        self._tools = tools
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.plugin_name = plugin_name
        self._cancel_event = cancel_event
        # Plugins show these (reports, model cards); a ${TOKEN} interpolated into them must not leak.
        self.run_settings = redact(dict(run_settings or {}))
        self.resume = resume
        self._hand_offs = hand_offs  # None: not checked (a context built by hand)

    # -- memory -------------------------------------------------------------------------------
    def remember(self, key: str, value: Any) -> None:
        self._check_declared("writes", key)
        self._memory.set(self._in_memory(key), value, stage=self.stage.value)

    def recall(self, key: str, default: Any = None) -> Any:
        self._check_declared("reads", key)
        return self._memory.get(self._in_memory(key), default)

    def has(self, key: str) -> bool:
        self._check_declared("reads", key)
        return self._memory.has(self._in_memory(key))

    def location_of(self, key: str) -> str:
        """Where this step keeps ``key`` in memory: ``key`` itself unless its ``memory:`` maps it.
        A plugin that writes files for a key names them by this, so two steps never share a file."""
        return self._in_memory(key)

    def _in_memory(self, key: str) -> str:
        return key if self._hand_offs is None else self._hand_offs.in_memory(key)

    def _check_declared(self, access: str, key: str) -> None:
        declared = getattr(self._hand_offs, access) if self._hand_offs is not None else None
        if declared is None or key in declared or (access == "reads" and key in ENGINE_KEYS):
            return
        where = "`provides`" if access == "writes" else "`dependencies`, `optional_dependencies` or `provides`"
        message = f"{access} the memory key {key!r}, which it does not declare; add it to {where}"
        strict = self._hand_offs.strict
        if strict_memory() if strict is None else strict:
            raise PluginError(message, plugin=self.plugin_name, stage=self.stage.value)
        if (self.plugin_name, access, key) not in _warned:
            _warned.add((self.plugin_name, access, key))
            self.warn(message)

    def summarize(self, key: str, value: Any) -> None:
        """Add a headline value to ``run.json``'s summary (e.g. final loss, export path)."""
        summary = dict(self._memory.get(SUMMARY_KEY, {}))
        summary[key] = value
        self._memory.set(SUMMARY_KEY, summary, stage=self.stage.value)

    # -- events -------------------------------------------------------------------------------
    def log(self, message: str, level: str = "info", **data: Any) -> None:
        kind = events.WARNING if level == "warning" else events.LOG
        self._bus.emit(kind, level=level, message=message, plugin=self.plugin_name, stage=self.stage.value, **data)

    def warn(self, message: str, **data: Any) -> None:
        self.log(message, level="warning", **data)

    def progress(self, task: str, completed: float, total: float | None = None, **fields: Any) -> None:
        """Report progress of a named task; the console draws a bar, events.jsonl records it."""
        self._bus.emit(
            events.PROGRESS,
            task=task,
            completed=completed,
            total=total,
            plugin=self.plugin_name,
            stage=self.stage.value,
            fields=fields,
        )

    def metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        self._bus.emit(events.METRICS, values=values, step=step, plugin=self.plugin_name, stage=self.stage.value)

    # -- tools --------------------------------------------------------------------------------
    async def use_tool(self, name: str, **kwargs: Any) -> Any:
        return await self._tools.call(name, **kwargs)

    # -- cancellation -------------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Raise RunInterrupted if the user pressed Ctrl-C; call it between units of work."""
        if self._cancel_event.is_set():
            raise RunInterrupted("cancelled by the user")

    # -- run information ----------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return int(self.run_settings.get("seed", 42))

    @property
    def is_main_process(self) -> bool:
        """False on the non-zero ranks of a distributed run, which run INPUT..DO only and write no files."""
        return is_main_process()
