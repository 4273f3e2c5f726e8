"""entity-training: a staged workflow engine for fine-tuning causal language models.

The engine is generic and light: importing it never imports torch, transformers or datasets.
The machine-learning work lives in the plugins (`plugins/`), loaded only when a workflow names them.

The public names below are loaded on first use (PEP 562), so that ``import entity_training``
(and with it every ``entity-train`` command's start, ``--help`` included) does not pay for
pydantic until a plugin or a workflow needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entity_training.context import PluginContext
    from entity_training.errors import (
        ConfigError,
        EntityTrainingError,
        InputError,
        PluginError,
        Problem,
        ReviewFailed,
        RunInterrupted,
    )
    from entity_training.plugin import Finding, Plugin, PluginConfig, ToolPlugin, tool
    from entity_training.stages import Stage

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_PUBLIC_NAMES: dict[str, str] = {
    "PluginContext": "context",
    "ConfigError": "errors",
    "EntityTrainingError": "errors",
    "InputError": "errors",
    "PluginError": "errors",
    "Problem": "errors",
    "ReviewFailed": "errors",
    "RunInterrupted": "errors",
    "Finding": "plugin",
    "Plugin": "plugin",
    "PluginConfig": "plugin",
    "ToolPlugin": "plugin",
    "tool": "plugin",
    "Stage": "stages",
}

__all__ = [  # spelled out, not derived, so that linters and type checkers see the public names
    "ConfigError",
    "EntityTrainingError",
    "Finding",
    "InputError",
    "Plugin",
    "PluginConfig",
    "PluginContext",
    "PluginError",
    "Problem",
    "ReviewFailed",
    "RunInterrupted",
    "Stage",
    "ToolPlugin",
    "tool",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module_name = _PUBLIC_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC_NAMES})
