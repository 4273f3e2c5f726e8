"""The configuration reference (docs/CONFIG.md), generated from the plugins' pydantic models."""

from __future__ import annotations

import json
from typing import Any

from entity_training.registry import DISTRIBUTION, PluginLookupError, entry_point_plugins, resolve_plugin
from entity_training.workflow import RunSettings, StepSpec, nested_model

HEADER = """# Configuration reference

Generated from the plugins' pydantic models by `python scripts/generate_reference.py`; a test fails
when this file is out of date. Every key is checked when a workflow is loaded: unknown keys, wrong
types and out-of-range values are errors that name the file, line and key.
"""


def _type_of(schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    if "$ref" in schema:
        return _type_of(definitions[schema["$ref"].split("/")[-1]], definitions)
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "anyOf" in schema:
        return " or ".join(_type_of(option, definitions) for option in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(schema.get('items', {}), definitions)}"
    if kind == "object" and "properties" in schema:
        return "mapping (see below)"
    return {
        "integer": "int",
        "number": "float",
        "string": "str",
        "boolean": "bool",
        "null": "null",
        "object": "mapping",
    }.get(kind, str(kind))


def _constraints(schema: dict[str, Any]) -> str:
    names = {
        "minimum": ">=",
        "exclusiveMinimum": ">",
        "maximum": "<=",
        "exclusiveMaximum": "<",
        "minLength": "min length",
    }
    return ", ".join(f"{label} {schema[key]}" for key, label in names.items() if key in schema)


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        return f"`{json.dumps(field.default_factory(), default=str)}`"
    return f"`{json.dumps(field.default, default=str)}`"


def model_table(model: type) -> list[str]:
    schema = model.model_json_schema()
    definitions = schema.get("$defs", {})
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        prop = schema["properties"].get(name, {})
        kind = _type_of(prop, definitions)
        limits = _constraints(prop if "$ref" not in prop else definitions[prop["$ref"].split("/")[-1]])
        if limits:
            kind += f" ({limits})"
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {kind} | {_default(field)} | {description} |")
        sub = nested_model(field.annotation)
        if sub is not None:
            nested.append((name, sub))
    for name, sub in nested:
        lines += ["", f"`{name}`:", "", *model_table(sub)]
    return lines


def config_reference_markdown() -> str:
    out = [HEADER, "## `run:`", "", *model_table(RunSettings), ""]
    out += ["## Every step (`- plugin: ...` under a stage)", "", *model_table(StepSpec), ""]
    for name in sorted(entry_point_plugins(DISTRIBUTION)):
        try:
            cls = resolve_plugin(name, []).cls
        except PluginLookupError as exc:
            out += [f"## `{name}`", "", f"(unavailable: {exc})", ""]
            continue
        stages = ", ".join(s.value for s in cls.supported_stages)
        out += [f"## `{name}` ({stages})", "", cls.description or (cls.__doc__ or "").strip().split("\n")[0], ""]
        out += (model_table(cls.ConfigModel) if cls.ConfigModel.model_fields else ["No settings."]) + [""]
    return "\n".join(out).rstrip() + "\n"
