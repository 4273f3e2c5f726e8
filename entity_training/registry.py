"""Plugin discovery and tool routing.

A plugin reference in a workflow is resolved, in order, as: an installed package's entry point
in the group ``entity_training.plugins`` (the built-in plugins are this project's own entry
points), a plugin folder under ``plugin_dirs`` (``plugin.py`` plus an optional ``config.yaml``),
or a dotted path ``package.module.Class``. Plugin code is imported only from those places: the
engine never names a plugin module. (Packages contribute ``entity-train`` subcommands the same
way: ``entity_training.command``.)
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import yaml

from entity_training.errors import PluginError
from entity_training.plugin import Plugin, ToolPlugin

ENTRY_POINT_GROUP = "entity_training.plugins"
DISTRIBUTION = "entity-training"  # this project's own distribution: its entry points are the built-in plugins
FOLDER_PLUGIN_FILE = "plugin.py"
FOLDER_CONFIG_FILE = "config.yaml"


class PluginLookupError(Exception):
    """A plugin reference could not be resolved; the message says why (shown as a config problem)."""


@dataclass
class PluginSource:
    """A resolved plugin class, where it came from, and config defaults (from a folder's config.yaml)."""

    cls: type[Plugin]
    origin: str
    defaults: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def entry_point_plugins(distribution: str | None = None) -> dict[str, EntryPoint]:
    """Installed plugins by name; only those of ``distribution`` when given (``DISTRIBUTION``: the built-ins)."""
    return {
        ep.name: ep
        for ep in entry_points(group=ENTRY_POINT_GROUP)
        if distribution is None or (ep.dist is not None and ep.dist.name == distribution)
    }


def folder_plugins(plugin_dirs: list[Path]) -> dict[str, Path]:
    """Folder plugins: ``<dir>/<name>/plugin.py``, or ``<dir>/plugin.py`` when a dir is itself one."""
    found: dict[str, Path] = {}
    for root in plugin_dirs:
        if (root / FOLDER_PLUGIN_FILE).is_file():
            found.setdefault(root.name, root)
            continue
        if root.is_dir():
            for child in sorted(root.iterdir()):
                if (child / FOLDER_PLUGIN_FILE).is_file():
                    found.setdefault(child.name, child)
    return found


def known_plugin_names(plugin_dirs: list[Path]) -> list[str]:
    return sorted(set(entry_point_plugins()) | set(folder_plugins(plugin_dirs)))


def _check_plugin_class(obj: Any, reference: str) -> type[Plugin]:
    if not (inspect.isclass(obj) and issubclass(obj, Plugin)):
        raise PluginLookupError(f"{reference!r} is not a Plugin subclass (got {type(obj).__name__} {obj!r})")
    return obj


def _import_attribute(module_name: str, attribute: str, reference: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginLookupError(f"cannot import module {module_name!r} for plugin {reference!r}: {exc}") from exc
    except Exception as exc:  # the plugin's own code failed at import
        raise PluginLookupError(
            f"importing {module_name!r} for plugin {reference!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not hasattr(module, attribute):
        raise PluginLookupError(f"module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)


def _load_folder_plugin(name: str, folder: Path) -> PluginSource:
    config_path = folder / FOLDER_CONFIG_FILE
    metadata: dict[str, Any] = {}
    if config_path.is_file():
        try:
            metadata = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise PluginLookupError(f"plugin folder {folder}: {FOLDER_CONFIG_FILE} is not valid YAML: {exc}") from exc
        if not isinstance(metadata, dict):
            raise PluginLookupError(f"plugin folder {folder}: {FOLDER_CONFIG_FILE} must be a mapping")
    module_name = f"entity_training_folder_plugins.{name}"
    spec = importlib.util.spec_from_file_location(module_name, folder / FOLDER_PLUGIN_FILE)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise PluginLookupError(
            f"plugin folder {folder}: {FOLDER_PLUGIN_FILE} raised {type(exc).__name__} at import: {exc}"
        ) from exc
    class_name = metadata.get("class")
    if class_name:
        cls = _check_plugin_class(getattr(module, class_name, None), f"{folder}:{class_name}")
    else:
        candidates = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Plugin) and obj.__module__ == module_name
        ]
        if len(candidates) != 1:
            raise PluginLookupError(
                f"plugin folder {folder}: {FOLDER_PLUGIN_FILE} defines {len(candidates)} Plugin classes; "
                f"define exactly one or name it with `class:` in {FOLDER_CONFIG_FILE}"
            )
        cls = candidates[0]
    defaults = metadata.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise PluginLookupError(f"plugin folder {folder}: `defaults` in {FOLDER_CONFIG_FILE} must be a mapping")
    return PluginSource(cls, f"folder {folder}", defaults=defaults, metadata=metadata)


def resolve_plugin(reference: str, plugin_dirs: list[Path]) -> PluginSource:
    """Find the class behind a workflow's ``plugin:`` value. Raises PluginLookupError."""
    eps = entry_point_plugins()
    if reference in eps:
        try:
            obj = eps[reference].load()
        except Exception as exc:
            raise PluginLookupError(f"entry point {reference!r} failed to load: {type(exc).__name__}: {exc}") from exc
        return PluginSource(_check_plugin_class(obj, reference), f"entry point {eps[reference].value}")
    folders = folder_plugins(plugin_dirs)
    if reference in folders:
        return _load_folder_plugin(reference, folders[reference])
    if "." in reference or ":" in reference:
        module_name, sep, attribute = reference.partition(":")
        if not sep:
            module_name, _, attribute = reference.rpartition(".")
        return PluginSource(
            _check_plugin_class(_import_attribute(module_name, attribute, reference), reference), "dotted path"
        )
    known = ", ".join(known_plugin_names(plugin_dirs)) or "none"
    # The built-in plugins exist as entry points only once the project is installed.
    install = (
        "" if entry_point_plugins(DISTRIBUTION) else " (The built-in plugins register on install: pip install -e .)"
    )
    raise PluginLookupError(
        f"unknown plugin {reference!r}. Known plugins: {known}. "
        "A custom plugin can also be named by dotted path (package.module.Class) or a folder under plugin_dirs."
        + install
    )


class ToolRouter:
    """Routes ``context.use_tool(name, ...)`` to the ToolPlugin that offers the tool."""

    def __init__(self) -> None:
        self._owners: dict[str, ToolPlugin] = {}

    def register(self, plugin: Plugin) -> list[str]:
        """Register a plugin's tools; returns the names that another plugin already offers."""
        if not isinstance(plugin, ToolPlugin):
            return []
        clashes = []
        for name in plugin.get_tools():
            if name in self._owners and self._owners[name] is not plugin:
                clashes.append(name)
            else:
                self._owners[name] = plugin
        return clashes

    def names(self) -> list[str]:
        return sorted(self._owners)

    async def call(self, name: str, **kwargs: Any) -> Any:
        if name not in self._owners:
            raise PluginError(
                f"no plugin in this workflow offers the tool {name!r}; available: {self.names() or 'none'}"
            )
        return await self._owners[name].call_tool(name, **kwargs)
