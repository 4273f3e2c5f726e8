"""Overrides of a workflow file from the command line: ``--set KEY=VALUE`` and the named flags.

A key addresses a step by its ``name:``, its plugin's name (the plugin's only step, or its only
step without a name) or a bare setting name; anything ambiguous is refused with the steps it
could mean. ``run.…``, ``plugin_dirs`` and ``workflow.…`` address the file itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from entity_training.errors import ConfigError, Problem
from entity_training.registry import PluginLookupError, resolve_plugin
from entity_training.stages import Stage
from entity_training.yaml_source import YamlPath, format_path

OVERRIDE_HEADS = ("run", "plugin_dirs", "workflow")  # --set HEAD.… that address the file, not a step


@dataclass
class Override:
    key: str  # as the user wrote it: "training_config.learning_rate", "run.seed", or a bare field name
    value: Any
    origin: str  # "--set training_config.learning_rate" or "--lr"


def parse_set_argument(text: str) -> Override:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            Problem(f"--set expects KEY=VALUE, got {text!r} (e.g. --set training_config.learning_rate=1e-4)")
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return Override(key.strip(), parsed, f"--set {key.strip()}")


def _stage_key(workflow_section: dict[str, Any], stage: Stage) -> str | None:
    for key in workflow_section:
        if isinstance(key, str) and key.strip().upper() == stage.value:
            return key
    return None


def _plugin_field_names(reference: str, plugin_dirs: list[Path]) -> set[str]:
    try:
        return set(resolve_plugin(reference, plugin_dirs).cls.ConfigModel.model_fields)
    except PluginLookupError:
        return set()


def plugin_aliases(reference: str, plugin_dirs: list[Path]) -> set[str]:
    """Names a --set may use for a step: its `plugin:` value, the class's last segment, its short name."""
    aliases = {reference, reference.replace(":", ".").split(".")[-1]}
    try:
        aliases.add(resolve_plugin(reference, plugin_dirs).cls.plugin_name())
    except PluginLookupError:
        pass
    return {alias.lower() for alias in aliases}


def apply_overrides(
    data: dict[str, Any], overrides: list[Override], plugin_dirs: list[Path]
) -> tuple[dict[YamlPath, str], list[Problem]]:
    """Write overrides into the raw data. Returns the origin of each written path and any problems."""
    origins: dict[YamlPath, str] = {}
    problems: list[Problem] = []
    section = data.get("workflow") if isinstance(data.get("workflow"), dict) else {}
    steps: list[tuple[YamlPath, dict]] = []
    for stage_key, items in section.items():
        for index, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict) and isinstance(item.get("plugin"), str):
                steps.append((("workflow", stage_key, index), item))

    def write(path: YamlPath, value: Any, origin: str) -> None:
        node: Any = data
        for part in path[:-1]:
            if isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                problems.append(
                    Problem(f"cannot set {format_path(path)}: {format_path(path[:-1])} is not a mapping", path=origin)
                )
                return
        if isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
            node[path[-1]] = value
        elif isinstance(node, dict):
            node[path[-1]] = value
        else:
            problems.append(Problem(f"cannot set {format_path(path)}", path=origin))
            return
        origins[path] = origin

    for override in overrides:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in override.key.split(".")]
        head = parts[0]
        if head in OVERRIDE_HEADS:
            if head == "workflow" and len(parts) > 1 and isinstance(section, dict):
                stage_key = (
                    _stage_key(section, Stage.parse(parts[1])) if str(parts[1]).upper() in Stage.__members__ else None
                )
                parts[1] = stage_key or parts[1]
            write(tuple(parts), override.value, override.origin)
            continue
        if len(parts) > 1:
            target = _addressed_step(str(head), steps, plugin_dirs, override, problems)
            if target:
                write((*target, "config", *parts[1:]), override.value, override.origin)
            continue
        # A bare field name (named flags and --set learning_rate=...): every plugin that has the field.
        having: dict[str, list[tuple[YamlPath, dict]]] = {}
        for path, item in steps:
            if head in _plugin_field_names(item["plugin"], plugin_dirs):
                having.setdefault(item["plugin"], []).append((path, item))
        if not having:
            problems.append(Problem(f"no plugin in this workflow has a setting named {head!r}", path=override.origin))
        for plugin, group in having.items():
            target = _one_step(plugin, group, override, problems)
            if target:
                write((*target, "config", head), override.value, override.origin)
    return origins, problems


def _step_label(path: YamlPath, item: dict) -> str:
    name = item.get("name")
    return f"{path[1]} #{path[2] + 1} ({item['plugin']}{f', name: {name}' if isinstance(name, str) else ''})"


def _one_step(
    plugin: str, group: list[tuple[YamlPath, dict]], override: Override, problems: list[Problem]
) -> YamlPath | None:
    """Of the steps of one plugin, the one an override by plugin name means: the only step, else the only one
    without a `name:` (a named step is then reached by its name). Several candidates are refused."""
    unnamed = [path for path, item in group if not item.get("name")]
    if len(group) == 1:
        return group[0][0]
    if len(unnamed) == 1:
        return unnamed[0]
    listed = "; ".join(_step_label(path, item) for path, item in group)
    fix = "give each a `name:` in the workflow and " if len(unnamed) > 1 else ""
    setting = override.key.partition(".")[2] or override.key
    problems.append(
        Problem(
            f"matches {len(group)} steps of plugin {plugin!r} ({listed}); "
            f"{fix}write --set NAME.{setting}=VALUE for the one you mean",
            path=override.origin,
        )
    )
    return None


def _addressed_step(
    head: str, steps: list[tuple[YamlPath, dict]], plugin_dirs: list[Path], override: Override, problems: list[Problem]
) -> YamlPath | None:
    """The one step ``--set HEAD.KEY`` addresses: the step named HEAD, else the one step of plugin HEAD."""
    named = [path for path, item in steps if str(item.get("name") or "").lower() == head.lower()]
    if named:
        return named[0]  # two steps with one name are refused at load
    matching = [(path, item) for path, item in steps if head.lower() in plugin_aliases(item["plugin"], plugin_dirs)]
    if matching:
        return _one_step(head, matching, override, problems)
    names = sorted({item["plugin"] for _, item in steps} | {item["name"] for _, item in steps if item.get("name")})
    problems.append(
        Problem(
            f"no plugin named {head!r} in this workflow, and no step has that `name:` "
            f"(it has: {', '.join(map(str, names)) or 'none'}); "
            "write --set NAME.KEY=VALUE, run.KEY=VALUE or workflow.STAGE.N.config.KEY=VALUE",
            path=override.origin,
        )
    )
    return None
