"""The one way tests build a PluginContext to run a single plugin without the executor."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from entity_training.context import PluginContext
from entity_training.events import EventBus
from entity_training.memory import Memory
from entity_training.registry import ToolRouter
from entity_training.stages import Stage


def make_context(
    stage: Stage,
    run_dir: Path,
    memory: Memory | None = None,
    *,
    events: list | None = None,
    sinks: Iterable[Callable[[dict], None]] = (),
    resume: bool = False,
    cancel_event: threading.Event | None = None,
) -> PluginContext:
    """A context for one plugin call in ``stage``, in ``run_dir``, on ``memory`` (a fresh one by default).

    ``events`` collects what the plugin emits; each of ``sinks`` sees every event as it is emitted;
    ``cancel_event`` is the run's cancellation flag (set it to press Ctrl-C).
    """
    bus = EventBus()
    if events is not None:
        bus.subscribe(events.append)
    for sink in sinks:
        bus.subscribe(sink)
    return PluginContext(
        memory=memory if memory is not None else Memory(),
        bus=bus,
        tools=ToolRouter(),
        run_dir=run_dir,
        stage=stage,
        plugin_name="test",
        cancel_event=cancel_event or threading.Event(),
        resume=resume,
    )
