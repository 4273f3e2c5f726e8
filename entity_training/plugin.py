"""The plugin interface: declarations on the class, a validated config, a fixed lifecycle.

Lifecycle: ``__init__`` validates the config (no I/O) when the workflow is loaded,
``initialize`` runs before the first stage, ``execute`` in the plugin's stage, and ``cleanup``
always runs after the run, also when it failed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from entity_training.errors import PluginError
from entity_training.stages import Stage

if TYPE_CHECKING:
    from entity_training.context import PluginContext


class PluginConfig(BaseModel):
    """Base of every plugin's ``ConfigModel``: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


@dataclass(frozen=True)
class Finding:
    """What ``Plugin.check_workflow`` reports: an error (exit 2 at load) or a notice (an announced adjustment)."""

    message: str
    key: str | None = None  # the config key it is about ("a.b" for nested ones), for the file and line
    error: bool = False


class Plugin:
    """Subclass, set the class attributes, implement ``_execute_impl``."""

    name: ClassVar[str] = ""  # short name used in workflows; defaults to the class name
    description: ClassVar[str] = ""
    supported_stages: ClassVar[tuple[Stage, ...]] = ()
    dependencies: ClassVar[tuple[str, ...]] = ()  # resources or memory keys needed before running
    optional_dependencies: ClassVar[tuple[str, ...]] = ()  # memory keys read when present; absent is fine
    provides: ClassVar[tuple[str, ...]] = ()  # memory keys this plugin writes
    # OUTPUT plugins that only describe the run (reports) may still run when REVIEW says FAIL.
    run_after_review_failure: ClassVar[bool] = False

    class ConfigModel(PluginConfig):
        pass

    def __init__(self, config: dict[str, Any] | BaseModel | None = None):
        if isinstance(config, self.ConfigModel):
            self.config = config
        else:
            self.config = self.ConfigModel.model_validate(dict(config or {}))

    @classmethod
    def plugin_name(cls) -> str:
        return cls.name or cls.__name__

    def check_workflow(self, plugins: Sequence[Plugin]) -> list[Finding]:
        """Contradictions with the workflow's other plugins (all of them, in run order), seen at load.

        Read their settings by field name, never by importing their classes. Default: none."""
        return []

    async def initialize(self, context: PluginContext) -> None:
        """Acquire what the plugin needs before the run starts. Default: nothing."""

    async def execute(self, context: PluginContext) -> Any:
        if context.stage not in self.supported_stages:
            allowed = ", ".join(s.value for s in self.supported_stages) or "none"
            raise PluginError(
                f"cannot run in stage {context.stage.value}; it supports: {allowed}",
                plugin=self.plugin_name(),
                stage=context.stage.value,
            )
        return await self._execute_impl(context)

    async def _execute_impl(self, context: PluginContext) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement _execute_impl")

    async def cleanup(self, context: PluginContext) -> None:
        """Release resources (files, models, GPU memory). Always called, also on failure."""


def tool(name: str | None = None, description: str = "") -> Callable[[Callable], Callable]:
    """Mark a ToolPlugin method as a tool that other plugins reach via ``context.use_tool``."""

    def mark(method: Callable) -> Callable:
        method.__tool_name__ = name or method.__name__  # type: ignore[attr-defined]
        method.__tool_description__ = description or (inspect.getdoc(method) or "").split("\n")[0]  # type: ignore[attr-defined]
        return method

    return mark


class ToolPlugin(Plugin):
    """A plugin that also offers named tools (methods decorated with ``@tool``)."""

    @classmethod
    def tool_names(cls) -> list[str]:
        return [
            member.__tool_name__ for _, member in inspect.getmembers(cls, callable) if hasattr(member, "__tool_name__")
        ]

    def get_tools(self) -> dict[str, Callable[..., Any]]:
        return {
            member.__tool_name__: member
            for _, member in inspect.getmembers(self, callable)
            if hasattr(member, "__tool_name__")
        }

    async def call_tool(self, name: str, **kwargs: Any) -> Any:
        tools = self.get_tools()
        if name not in tools:
            raise PluginError(
                f"has no tool {name!r}; it offers {sorted(tools)}", plugin=self.plugin_name(), stage="tool"
            )
        result = tools[name](**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
