"""The executor runs each stage once in order, shares memory, persists it, and always cleans up."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import sample_plugins
from helpers.engine import load

from entity_training.errors import RunInterrupted
from entity_training.executor import WorkflowExecutor
from entity_training.stages import Stage


@pytest.fixture(autouse=True)
def clear_calls():
    sample_plugins.CALLS.clear()
    sample_plugins.Sleeper.saved.clear()


def recorder(stage: str, label: str) -> str:
    return f"  {stage}:\n    - plugin: sample_plugins.Recorder\n      config: {{label: {label}}}\n"


async def test_stages_run_in_order_and_empty_stages_are_skipped(tmp_path):
    # Declared out of order; THINK and REVIEW are absent, PARSE is empty.
    text = "workflow:\n" + recorder("OUTPUT", "o") + recorder("do", "d") + "  PARSE: []\n" + recorder("input", "i")
    result = await WorkflowExecutor(load(tmp_path, text), tmp_path / "run").run()
    assert result.status == "success"
    assert sample_plugins.CALLS == [
        "init:i",
        "init:d",
        "init:o",
        "INPUT:i",
        "DO:d",
        "OUTPUT:o",
        "cleanup:o",
        "cleanup:d",
        "cleanup:i",
    ]
    assert [(r.stage, r.status) for r in result.stages] == [
        ("INPUT", "success"),
        ("DO", "success"),
        ("OUTPUT", "success"),
    ]


async def test_memory_is_shared_between_stages_and_summary_lands_in_run_json(tmp_path):
    text = "workflow:\n  INPUT:\n    - plugin: sample_plugins.Writer\n      config: {count: 4}\n  DO:\n    - plugin: sample_plugins.Summer\n"
    result = await WorkflowExecutor(load(tmp_path, text), tmp_path / "run").run()
    assert result.memory.get("total") == 6
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["status"] == "success"
    assert run_json["summary"] == {"count": 4, "total": 6}
    assert [s["plugin"] for s in run_json["stages"]] == ["sample_plugins.Writer", "sample_plugins.Summer"]
    assert all(isinstance(s["seconds"], float) for s in run_json["stages"])


async def test_events_are_written_as_json_lines(tmp_path):
    result = await WorkflowExecutor(load(tmp_path, "workflow:\n" + recorder("input", "i")), tmp_path / "run").run()
    lines = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    types = [event["type"] for event in lines]
    assert types[0] == "run_start" and types[-1] == "run_end"
    assert "stage_start" in types and "stage_end" in types
    stage_end = next(e for e in lines if e["type"] == "stage_end")
    assert stage_end["stage"] == "INPUT" and "seconds" in stage_end


async def test_memory_is_persisted_and_resume_skips_finished_stages(tmp_path):
    run_dir = tmp_path / "run"
    text = (
        "workflow:\n  INPUT:\n    - plugin: sample_plugins.Writer\n  PARSE:\n    - plugin: sample_plugins.VolatileWriter\n"
        "  DO:\n    - plugin: sample_plugins.Failer\n"
    )
    first = await WorkflowExecutor(load(tmp_path, text), run_dir).run()
    assert first.status == "failed"
    saved = json.loads((run_dir / "memory.json").read_text())
    assert saved["entries"]["numbers"] == [0, 1, 2]
    assert "handle" not in saved["entries"] and saved["completed_stages"] == ["INPUT", "PARSE"]

    sample_plugins.CALLS.clear()
    fixed = text.replace("sample_plugins.Failer", "sample_plugins.Summer")
    second = await WorkflowExecutor(load(tmp_path, fixed), run_dir, resume=True).run()
    assert second.status == "success"
    statuses = {(r.stage, r.status) for r in second.stages}
    assert ("INPUT", "skipped") in statuses  # persisted: not re-run
    assert ("PARSE", "success") in statuses and sample_plugins.CALLS == ["volatile"]  # volatile: re-run
    assert second.memory.get("total") == 3


def test_truncated_memory_file_is_a_clear_error(tmp_path):
    from entity_training.errors import ConfigError
    from entity_training.memory import Memory

    (tmp_path / "memory.json").write_text('{"entries": {"a": ')
    with pytest.raises(ConfigError, match="unreadable"):
        Memory.load(tmp_path)


async def test_failure_runs_error_handlers_then_cleans_up_everything(tmp_path):
    text = (
        "workflow:\n"
        + recorder("input", "i")
        + "  DO:\n    - plugin: sample_plugins.Failer\n"
        + recorder("OUTPUT", "o")
    )
    text += "  ERROR:\n    - plugin: sample_plugins.ErrorHandler\n"
    result = await WorkflowExecutor(load(tmp_path, text), tmp_path / "run").run()
    assert result.status == "failed" and str(result.error) == "boom"
    assert "OUTPUT:o" not in sample_plugins.CALLS
    assert "error-handler:boom" in sample_plugins.CALLS
    assert sample_plugins.CALLS[-2:] == ["cleanup:o", "cleanup:i"]  # cleanup also for plugins that never ran
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["status"] == "failed" and run_json["error"]["message"] == "boom"
    assert run_json["exit_code"] == 1


async def test_review_failure_skips_output_and_exits_3(tmp_path):
    text = "workflow:\n  REVIEW:\n    - plugin: sample_plugins.Failer\n      config: {kind: review}\n" + recorder(
        "OUTPUT", "o"
    )
    result = await WorkflowExecutor(load(tmp_path, text), tmp_path / "run").run()
    assert result.status == "review_failed"
    assert "OUTPUT:o" not in sample_plugins.CALLS and "cleanup:o" in sample_plugins.CALLS
    assert json.loads((tmp_path / "run" / "run.json").read_text())["exit_code"] == 3


def test_cancellation_lets_the_plugin_save_then_stops(tmp_path):
    text = "workflow:\n  DO:\n    - plugin: sample_plugins.Sleeper\n" + recorder("OUTPUT", "o")
    workflow = load(tmp_path, text)
    cancel = threading.Event()

    async def main():
        executor = WorkflowExecutor(workflow, tmp_path / "run", cancel_event=cancel)
        task = asyncio.create_task(executor.run())
        await asyncio.sleep(0.2)
        cancel.set()
        return await task

    result = asyncio.run(main())
    assert result.status == "interrupted" and isinstance(result.error, RunInterrupted)
    assert sample_plugins.Sleeper.saved  # the plugin saw the cancellation and saved
    assert "OUTPUT:o" not in sample_plugins.CALLS and "cleanup:o" in sample_plugins.CALLS
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"


def test_task_cancellation_is_also_an_interruption(tmp_path):
    workflow = load(tmp_path, "workflow:\n  DO:\n    - plugin: sample_plugins.Sleeper\n")

    async def main():
        task = asyncio.create_task(WorkflowExecutor(workflow, tmp_path / "run").run())
        await asyncio.sleep(0.1)
        task.cancel()
        return await task

    assert asyncio.run(main()).status == "interrupted"


async def test_tools_are_routed_to_their_plugin(tmp_path):
    text = "workflow:\n  PARSE:\n    - plugin: sample_plugins.Calculator\n  THINK:\n    - plugin: sample_plugins.ToolUser\n"
    result = await WorkflowExecutor(load(tmp_path, text), tmp_path / "run").run()
    assert result.status == "success", result.error
    assert result.memory.get("tool_results") == [42, 3]


async def test_unknown_tool_is_a_clear_failure(tmp_path):
    result = await WorkflowExecutor(
        load(tmp_path, "workflow:\n  THINK:\n    - plugin: sample_plugins.ToolUser\n"), tmp_path / "run"
    ).run()
    assert result.status == "failed" and "no plugin in this workflow offers the tool 'double'" in str(result.error)


def test_a_script_calls_a_tool_through_the_router():
    from entity_training.errors import ConfigError, PluginError
    from entity_training.tools import call_tool

    assert call_tool("sample_plugins.Calculator", "double", x=21) == 42
    assert call_tool("sample_plugins.Calculator", "add_async", a=1, b=2) == 3
    with pytest.raises(PluginError, match="offers the tool 'triple'; available: \\['add_async', 'double'\\]"):
        call_tool("sample_plugins.Calculator", "triple", x=1)
    with pytest.raises(ConfigError, match="unknown plugin 'no_such_plugin'"):
        call_tool("no_such_plugin", "double", x=1)


def test_stop_after_runs_only_the_first_stages(tmp_path):
    text = "workflow:\n" + recorder("input", "i") + recorder("THINK", "t") + recorder("DO", "d")
    workflow = load(tmp_path, text)
    result = asyncio.run(WorkflowExecutor(workflow, tmp_path / "run").run(stop_after=Stage.THINK))
    assert result.status == "success" and "DO:d" not in sample_plugins.CALLS and "THINK:t" in sample_plugins.CALLS


def test_plugin_refuses_a_stage_it_does_not_support(make_context):
    from entity_training.errors import PluginError

    with pytest.raises(PluginError, match="cannot run in stage OUTPUT"):
        asyncio.run(sample_plugins.Writer().execute(make_context(Stage.OUTPUT)))


async def test_non_main_rank_stops_after_do_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    text = "workflow:\n" + recorder("DO", "d") + recorder("OUTPUT", "o")
    result = await WorkflowExecutor(load(tmp_path, text), tmp_path / "run").run()
    assert result.status == "success" and "OUTPUT:o" not in sample_plugins.CALLS
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "events.jsonl").exists()


async def test_reporters_still_run_after_a_failed_review(tmp_path):
    text = (
        "workflow:\n  REVIEW:\n    - plugin: sample_plugins.Failer\n      config: {kind: review}\n"
        + recorder("OUTPUT", "export")
        + "    - plugin: sample_plugins.Reporter\n"
    )
    result = await WorkflowExecutor(load(tmp_path, text), tmp_path / "run").run()
    assert result.status == "review_failed"
    assert "report" in sample_plugins.CALLS and "OUTPUT:export" not in sample_plugins.CALLS
    assert "OUTPUT" not in result.memory.completed_stages
