"""The built-in training plugins, by short name.

Values are import paths, resolved only when a workflow names the plugin, so listing the plugins
never imports torch.
"""

from __future__ import annotations

import importlib

AVAILABLE_PLUGINS: dict[str, str] = {
    "dataset_loader": "plugins.dataset_loader:DatasetLoaderPlugin",
    "training_config": "plugins.training_config:TrainingConfigPlugin",
    "data_preparation": "plugins.data_preparation:DataPreparationPlugin",
    "memory_plan": "plugins.memory_planning:MemoryPlanPlugin",
    "fine_tuning": "plugins.fine_tuning:FineTuningPlugin",
    "evaluation": "plugins.evaluation:EvaluationPlugin",
    "model_export": "plugins.model_export:ModelExportPlugin",
    "inference_test": "plugins.inference_test:InferenceTestPlugin",
    "run_report": "plugins.run_report:RunReportPlugin",
}


def get_plugin(name: str) -> type:
    """Import and return the class of a built-in plugin by its short name."""
    if name not in AVAILABLE_PLUGINS:
        raise KeyError(f"no built-in plugin named {name!r}; known: {', '.join(sorted(AVAILABLE_PLUGINS))}")
    module_name, _, class_name = AVAILABLE_PLUGINS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def list_plugins() -> list[str]:
    return sorted(AVAILABLE_PLUGINS)
