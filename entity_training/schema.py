"""JSON Schema of workflow files, built from the plugins' pydantic models (for editors)."""

from __future__ import annotations

from typing import Any

from entity_training.registry import PluginLookupError, known_plugin_names, resolve_plugin
from entity_training.stages import ALL_STAGES
from entity_training.workflow import RunSettings, StepSpec


def workflow_json_schema() -> dict[str, Any]:
    # `name:` and `memory:` belong to every step, whatever its plugin.
    step_fields = {k: v for k, v in StepSpec.model_json_schema()["properties"].items() if k not in ("plugin", "config")}
    step_variants = []
    for name in known_plugin_names([]):
        try:
            cls = resolve_plugin(name, []).cls
        except PluginLookupError:
            continue
        step_variants.append(
            {
                "type": "object",
                "description": cls.description,
                "properties": {
                    "plugin": {"const": name},
                    **step_fields,
                    "config": cls.ConfigModel.model_json_schema(),
                },
                "required": ["plugin"],
                "additionalProperties": False,
            }
        )
    custom_step = {
        "type": "object",
        "description": "A custom plugin (dotted path or folder plugin).",
        "properties": {"plugin": {"type": "string"}, **step_fields, "config": {"type": "object"}},
        "required": ["plugin"],
        "additionalProperties": False,
    }
    stage_names = [s.value for s in ALL_STAGES] + [s.value.lower() for s in ALL_STAGES]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "entity-training workflow",
        "type": "object",
        "properties": {
            "run": RunSettings.model_json_schema(),
            "plugin_dirs": {"type": "array", "items": {"type": "string"}},
            "workflow": {
                "type": "object",
                "propertyNames": {"enum": stage_names},
                "additionalProperties": {"type": "array", "items": {"anyOf": [*step_variants, custom_step]}},
            },
        },
        "required": ["workflow"],
        "additionalProperties": False,
    }
