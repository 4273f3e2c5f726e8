"""Memory is a declared hand-off: a plugin reads only what it declares and writes only what it provides."""

from __future__ import annotations

import asyncio

import pytest
import sample_plugins
from helpers.engine import load, run

from entity_training import Plugin, PluginError, Stage
from entity_training.context import STRICT_MEMORY_ENV
from entity_training.executor import WorkflowExecutor
from entity_training.testing import run_plugin


class Reader(Plugin):
    supported_stages = (Stage.DO,)
    dependencies = ("numbers",)
    optional_dependencies = ("labels",)
    provides = ("total",)

    async def _execute_impl(self, context):
        total = sum(context.recall("numbers"))
        if context.has("labels"):
            total += len(context.recall("labels"))
        context.remember("total", total)
        return total


class Snooper(Reader):
    async def _execute_impl(self, context):
        return context.recall("secret_plan")


class Scribbler(Reader):
    async def _execute_impl(self, context):
        context.remember("numbers", [])


async def test_declared_keys_pass_and_a_missing_optional_one_is_fine(tmp_path):
    result, memory = await run_plugin(Reader(), memory={"numbers": [1, 2]}, run_dir=tmp_path)
    assert result == 3 and memory["total"] == 3
    result, _ = await run_plugin(Reader(), memory={"numbers": [1, 2], "labels": ["a"]}, run_dir=tmp_path)
    assert result == 4


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (Snooper(), r"Snooper \(DO\): reads the memory key 'secret_plan', which it does not declare"),
        (
            Scribbler(),
            r"Scribbler \(DO\): writes the memory key 'numbers', which it does not declare; add it to `provides`",
        ),
    ],
)
async def test_an_undeclared_key_fails_loudly_in_tests(tmp_path, plugin, message):
    with pytest.raises(PluginError, match=message):
        await run_plugin(plugin, memory={"numbers": [1]}, run_dir=tmp_path)


SNOOP_WORKFLOW = """
workflow:
  INPUT:
    - plugin: sample_plugins.Writer
  DO:
    - plugin: test_hand_offs.Snooper
"""


def test_in_a_run_strict_checking_fails_the_plugin(tmp_path):
    result = run(load(tmp_path, SNOOP_WORKFLOW), tmp_path / "run")
    assert result.status == "failed" and "secret_plan" in str(result.error)


def test_without_strict_checking_a_third_party_plugin_runs_and_is_warned_once(tmp_path, monkeypatch):
    monkeypatch.setenv(STRICT_MEMORY_ENV, "0")
    events: list[dict] = []
    executor = WorkflowExecutor(load(tmp_path, SNOOP_WORKFLOW.replace("Snooper", "TwiceSnooper")), tmp_path / "run")
    executor.bus.subscribe(events.append)
    result = asyncio.run(executor.run())
    assert result.status == "success"
    warnings = [e for e in events if e["type"] == "warning" and "secret_plan" in e["message"]]
    assert len(warnings) == 1 and warnings[0]["plugin"] == "test_hand_offs.TwiceSnooper"


class TwiceSnooper(Reader):
    async def _execute_impl(self, context):
        return [context.recall("secret_plan"), context.has("secret_plan")]


def test_engine_keys_need_no_declaration(tmp_path):
    text = (
        "workflow:\n  DO:\n    - plugin: sample_plugins.Failer\n  ERROR:\n    - plugin: sample_plugins.ErrorHandler\n"
    )
    assert run(load(tmp_path, text), tmp_path / "run").status == "failed"
    assert any(call.startswith("error-handler:boom") for call in sample_plugins.CALLS)
