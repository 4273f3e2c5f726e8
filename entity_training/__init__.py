"""entity-training: a staged workflow engine for fine-tuning causal language models.

The engine is generic and light: importing it never imports torch, transformers or datasets.
The machine-learning work lives in the plugins (`plugins/`), loaded only when a workflow names them.
"""

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
from entity_training.plugin import Plugin, PluginConfig, ToolPlugin, tool
from entity_training.stages import Stage

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EntityTrainingError",
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
