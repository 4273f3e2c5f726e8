"""Unit-test one plugin without a workflow file or the executor.

    result, memory = await run_plugin(MyPlugin({"limit": 2}), memory={"dataset.train": rows}, run_dir=tmp_path)

``run_plugin`` runs the plugin's whole lifecycle (``initialize``, ``execute``, ``cleanup``) with
strict hand-off checks: reading or writing a memory key the plugin does not declare raises
``PluginError``. ``make_context`` builds the context alone, for tests that call methods directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from entity_training.context import HandOffs, PluginContext
from entity_training.events import EventBus
from entity_training.memory import Memory
from entity_training.plugin import Plugin, ToolPlugin
from entity_training.registry import ToolRouter
from entity_training.stages import Stage


def make_context(
    stage: Stage,
    run_dir: Path,
    memory: Memory | None = None,
    *,
    plugin: Plugin | None = None,
    tools: Sequence[ToolPlugin] = (),
    events: list[dict[str, Any]] | None = None,
    sinks: Sequence[Callable[[dict[str, Any]], None]] = (),
    cancel_event: threading.Event | None = None,
    resume: bool = False,
    run_settings: dict[str, Any] | None = None,
) -> PluginContext:
    """A context for calls of ``plugin`` (its hand-offs checked strictly; none without a plugin).

    ``events`` collects what the plugin emits, ``sinks`` see each event, ``tools`` are the
    ToolPlugins that ``context.use_tool`` reaches (``plugin`` itself when it is one)."""
    bus = EventBus()
    if events is not None:
        bus.subscribe(events.append)
    for sink in sinks:
        bus.subscribe(sink)
    router = ToolRouter()
    for owner in (plugin, *tools):
        if owner is not None:
            router.register(owner)
    return PluginContext(
        memory=memory if memory is not None else Memory(),
        bus=bus,
        tools=router,
        run_dir=Path(run_dir),
        stage=stage,
        plugin_name=plugin.plugin_name() if plugin is not None else "test",
        cancel_event=cancel_event or threading.Event(),
        run_settings=run_settings,
        resume=resume,
        hand_offs=HandOffs.of(plugin, strict=True) if plugin is not None else None,
    )


async def run_plugin(
    plugin: Plugin,
    *,
    run_dir: Path,
    memory: Mapping[str, Any] | None = None,
    stage: Stage | None = None,
    tools: Sequence[ToolPlugin] = (),
    events: list[dict[str, Any]] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run ``plugin`` once against ``memory``; returns what it returned and the memory afterwards.

    ``stage`` defaults to the plugin's only supported stage. Errors propagate as they would in a run
    (``cleanup`` has run by then)."""
    if stage is None:
        if len(plugin.supported_stages) != 1:
            raise ValueError(f"{plugin.plugin_name()} supports several stages; pass stage=")
        stage = plugin.supported_stages[0]
    store = Memory()
    for key, value in (memory or {}).items():
        store.set(key, value)
    context = make_context(stage, run_dir, store, plugin=plugin, tools=tools, events=events)
    await plugin.initialize(context)
    try:
        result = await plugin.execute(context)
    finally:
        await plugin.cleanup(context)
    return result, {key: store.get(key) for key in store.keys()}
