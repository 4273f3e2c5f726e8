"""Calling a plugin's tool from outside a workflow (scripts), through the same router a workflow uses.

Inside a workflow a plugin calls ``await context.use_tool(name, ...)``; a script has no workflow,
so ``call_tool`` resolves the plugin as a workflow would name it, builds it with its default
config and routes the call, so that the script runs exactly the code a workflow runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from entity_training.errors import ConfigError, Problem
from entity_training.registry import PluginLookupError, ToolRouter, resolve_plugin


def call_tool(plugin: str, name: str, /, **arguments: Any) -> Any:
    """Call the tool ``name`` of ``plugin`` (a short name or dotted path, as in a workflow) and return its result.

    Blocking: it runs its own event loop, so call it from synchronous code only.

    Raises:
        ConfigError: no plugin is known by that name.
        PluginError: the plugin offers no tool of that name; or whatever the tool raises.
    """
    try:
        source = resolve_plugin(plugin, [])
    except PluginLookupError as exc:
        raise ConfigError(Problem(str(exc))) from exc
    router = ToolRouter()
    router.register(source.cls())
    return asyncio.run(router.call(name, **arguments))
