"""Plugins used by the engine tests (imported by dotted path: ``sample_plugins.Name``)."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

from pydantic import Field

from entity_training import Plugin, PluginConfig, ReviewFailed, Stage, ToolPlugin, tool

CALLS: list[str] = []  # what ran, in order, across plugins


class Recorder(Plugin):
    """Records that it ran; may be placed in any stage."""

    name = "recorder"
    supported_stages = (Stage.INPUT, Stage.PARSE, Stage.THINK, Stage.DO, Stage.REVIEW, Stage.OUTPUT, Stage.ERROR)

    class ConfigModel(PluginConfig):
        label: str = Field("r", description="Name written to CALLS.")
        rate: float = Field(0.1, gt=0, le=1, description="A bounded number.")
        mode: Literal["a", "b"] = Field("a", description="A choice.")

    async def initialize(self, context):
        CALLS.append(f"init:{self.config.label}")

    async def _execute_impl(self, context):
        CALLS.append(f"{context.stage.value}:{self.config.label}")
        return self.config.label

    async def cleanup(self, context):
        CALLS.append(f"cleanup:{self.config.label}")


class Writer(Plugin):
    name = "writer"
    supported_stages = (Stage.INPUT,)
    provides = ("numbers",)

    class ConfigModel(PluginConfig):
        count: int = Field(3, gt=0, description="How many numbers to write.")

    async def _execute_impl(self, context):
        context.remember("numbers", list(range(self.config.count)))
        context.summarize("count", self.config.count)
        return f"wrote {self.config.count}"


class VolatileWriter(Plugin):
    """Writes a value that cannot be persisted, so its stage must re-run on resume."""

    name = "volatile_writer"
    supported_stages = (Stage.PARSE,)
    provides = ("handle",)

    async def _execute_impl(self, context):
        CALLS.append("volatile")
        context.remember("handle", object())


class Summer(Plugin):
    name = "summer"
    supported_stages = (Stage.DO,)
    dependencies = ("numbers",)
    provides = ("total",)

    async def _execute_impl(self, context):
        total = sum(context.recall("numbers"))
        context.remember("total", total)
        context.summarize("total", total)
        return f"total {total}"


class Failer(Plugin):
    name = "failer"
    supported_stages = (Stage.THINK, Stage.DO, Stage.REVIEW)

    class ConfigModel(PluginConfig):
        kind: Literal["error", "review"] = Field("error", description="How to fail.")

    async def _execute_impl(self, context):
        if self.config.kind == "review":
            raise ReviewFailed("perplexity 12.0 is above perplexity_max 10.0 by 2.0")
        raise RuntimeError("boom")


class ErrorHandler(Plugin):
    name = "error_handler"
    supported_stages = (Stage.ERROR,)

    async def _execute_impl(self, context):
        CALLS.append(f"error-handler:{context.recall('run.error')['message']}")


class Sleeper(Plugin):
    """Works in small steps and checks for cancellation between them."""

    name = "sleeper"
    supported_stages = (Stage.DO,)
    saved: ClassVar[list[int]] = []

    class ConfigModel(PluginConfig):
        steps: int = Field(200, gt=0, description="Steps of 50 ms.")

    async def _execute_impl(self, context):
        for step in range(self.config.steps):
            if context.cancelled:
                Sleeper.saved.append(step)  # a real plugin would save a checkpoint here
                context.check_cancelled()
            await asyncio.sleep(0.05)
        return "slept"


class Calculator(ToolPlugin):
    name = "calculator"
    supported_stages = (Stage.PARSE,)

    @tool("double", description="Multiply by two.")
    def double(self, x: int) -> int:
        return 2 * x

    @tool("add_async")
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def _execute_impl(self, context):
        return None


class OtherCalculator(ToolPlugin):
    name = "other_calculator"
    supported_stages = (Stage.PARSE,)

    @tool("double")
    def twice(self, x: int) -> int:
        return x + x

    async def _execute_impl(self, context):
        return None


class ToolUser(Plugin):
    name = "tool_user"
    supported_stages = (Stage.THINK,)
    provides = ("tool_results",)

    async def _execute_impl(self, context):
        doubled = await context.use_tool("double", x=21)
        added = await context.use_tool("add_async", a=1, b=2)
        context.remember("tool_results", [doubled, added])


class Leaker(Plugin):
    """Tries to leak a secret everywhere a plugin can write."""

    name = "leaker"
    supported_stages = (Stage.INPUT,)
    provides = ("auth",)

    async def _execute_impl(self, context):
        import os

        token = os.environ["HF_TOKEN"]
        context.log(f"using token {token}")
        context.remember("auth", {"header": f"Bearer {token}"})
        context.summarize("token", token)
        context.metrics({"note": token}, step=1)
        return f"done with {token}"


class Reporter(Plugin):
    """Describes the run; allowed to run after a failed review."""

    name = "reporter"
    supported_stages = (Stage.OUTPUT,)
    run_after_review_failure = True

    async def _execute_impl(self, context):
        CALLS.append("report")


class OneKeyNotATuple(Plugin):
    """Declares ("numbers") (a string), not ("numbers",)."""

    name = "one_key_not_a_tuple"
    supported_stages = (Stage.DO,)
    dependencies = "numbers"  # type: ignore[assignment]
