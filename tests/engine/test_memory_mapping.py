"""One plugin, two steps: `name:` tells the steps apart and `memory:` gives each its own memory keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers.engine import load, run
from helpers.workflows import line_of
from pydantic import Field

from entity_training import Plugin, PluginConfig, Stage
from entity_training.errors import ConfigError
from entity_training.key_map import KeyMap
from entity_training.overrides import Override


class Loader(Plugin):
    """Like dataset_loader: writes a data set and its statistics under `data.*`."""

    supported_stages = (Stage.INPUT,)
    provides = ("data.train", "data.stats")

    class ConfigModel(PluginConfig):
        rows: list[int] = Field(default_factory=lambda: [1, 2, 3], description="The data set.")

    async def _execute_impl(self, context):
        context.remember("data.train", list(self.config.rows))
        context.remember("data.stats", {"rows": len(self.config.rows)})


class Counter(Plugin):
    """Like data_preparation: reads `data.train`, and `data.stats` when present (recall with a default)."""

    supported_stages = (Stage.THINK,)
    dependencies = ("data.train",)
    optional_dependencies = ("data.stats",)
    provides = ("data.count",)

    async def _execute_impl(self, context):
        stats = context.recall("data.stats", {"rows": None})
        context.remember("data.count", {"sum": sum(context.recall("data.train")), "rows": stats["rows"]})


class Peeker(Counter):
    """Reads its data under the name the mapping gave it: a key it does not declare."""

    async def _execute_impl(self, context):
        return context.recall("pref.train")


TWO_DATA_SETS = """
workflow:
  INPUT:
    - plugin: test_memory_mapping.Loader
    - plugin: test_memory_mapping.Loader
      name: pref_data
      memory: {data: pref}
      config: {rows: [10, 20]}
  THINK:
    - plugin: test_memory_mapping.Counter
    - plugin: test_memory_mapping.Counter
      name: pref_count
      memory: {data: pref, data.count: totals.pref}
"""


def test_key_map_renames_whole_segments_and_the_longest_entry_wins():
    key_map = KeyMap({"dataset": "preference", "training.memory_plan": "preference.memory_plan"})
    assert key_map("dataset.train") == "preference.train"
    assert key_map("dataset") == "preference"
    assert key_map("datasets.train") == "datasets.train"  # a prefix is whole segments
    assert key_map("training.memory_plan") == "preference.memory_plan"
    assert key_map("training.result") == "training.result"
    assert KeyMap({"data": "a", "data.count": "b.c"})("data.count") == "b.c"


def test_two_steps_of_one_plugin_keep_their_data_apart_and_later_steps_read_the_mapped_keys(tmp_path):
    result = run(load(tmp_path, TWO_DATA_SETS), tmp_path / "run")
    assert result.status == "success", result.error
    memory = result.memory
    assert memory.get("data.train") == [1, 2, 3] and memory.get("pref.train") == [10, 20]
    assert memory.get("data.count") == {"sum": 6, "rows": 3}
    # the optional read (recall with a default) found pref.stats; the whole-key entry beat the prefix
    assert memory.get("totals.pref") == {"sum": 30, "rows": 2}
    assert not memory.has("pref.count")
    assert [r.plugin for r in result.stages] == [
        "test_memory_mapping.Loader",
        "pref_data",
        "test_memory_mapping.Counter",
        "pref_count",
    ]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert {e["plugin"] for e in events if e["type"] == "plugin_end"} >= {"pref_data", "pref_count"}


def test_resume_restores_the_mapped_keys(tmp_path):
    failing = TWO_DATA_SETS + "  DO:\n    - plugin: sample_plugins.Failer\n"
    first = run(load(tmp_path, failing), tmp_path / "run")
    assert first.status == "failed"
    second = run(load(tmp_path, TWO_DATA_SETS), tmp_path / "run", resume=True)
    assert second.status == "success"
    assert {r.status for r in second.stages} == {"skipped"}
    assert second.memory.get("pref.train") == [10, 20] and second.memory.get("totals.pref")["sum"] == 30


def test_the_load_time_check_uses_the_mapped_keys(tmp_path):
    text = TWO_DATA_SETS.replace("memory: {data: pref}\n", "memory: {data: other}\n", 1)
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text)
    (problem,) = excinfo.value.problems
    assert problem.message.startswith(
        "plugin 'test_memory_mapping.Counter' (step 'pref_count') needs 'pref.train' "
        "(its 'data.train', renamed by `memory:`), which no plugin before it provides"
    )
    assert problem.line == line_of(tmp_path / "workflow.yaml", "name: pref_count") - 1


def test_the_run_time_check_is_on_the_plugins_own_key_names(tmp_path):
    text = TWO_DATA_SETS.replace(
        "plugin: test_memory_mapping.Counter\n      name", "plugin: test_memory_mapping.Peeker\n      name"
    )
    result = run(load(tmp_path, text), tmp_path / "run")
    assert result.status == "failed"
    assert "pref_count (THINK): reads the memory key 'pref.train', which it does not declare" in str(result.error)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{dataset: pref}",
            "`memory: {dataset: pref}` renames none of the keys of plugin 'test_memory_mapping.Loader'",
        ),
        ("{data.train.x: pref}", "renames none of the keys"),
        ("{data.stats: summary}", "to 'summary', which the engine owns"),
        ("{data: 'a..b'}", "'a..b' is not a memory key"),
    ],
)
def test_a_wrong_mapping_entry_is_refused_at_its_line(tmp_path, entry, message):
    text = TWO_DATA_SETS.replace("memory: {data: pref}\n", f"memory: {entry}\n", 1)
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text)
    (problem,) = excinfo.value.problems
    assert message in problem.message
    assert problem.line == line_of(tmp_path / "workflow.yaml", f"memory: {entry}")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("pref_data", "two steps are named 'pref_data' (INPUT and THINK)"),
        ("loader", "the name 'loader' is also the plugin of another step (INPUT)"),
        ("run", "a step cannot be named 'run'"),
    ],
)
def test_a_name_that_would_make_set_ambiguous_is_refused(tmp_path, name, message):
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, TWO_DATA_SETS.replace("name: pref_count", f"name: {name}"))
    (problem,) = excinfo.value.problems
    assert message in problem.message and problem.path == "workflow.THINK[1].name"


def test_set_by_name_reaches_one_step_and_the_plugin_name_the_unnamed_one(tmp_path):
    workflow = load(
        tmp_path,
        TWO_DATA_SETS,
        [Override("pref_data.rows", [7], "--set pref_data.rows"), Override("loader.rows", [5], "--set loader.rows")],
    )
    assert [s.plugin.config.rows for s in workflow.steps_in(Stage.INPUT)] == [[5], [7]]


def test_set_by_plugin_name_is_refused_when_several_steps_could_be_meant(tmp_path):
    text = TWO_DATA_SETS.replace("      name: pref_data\n", "")
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text, [Override("loader.rows", [5], "--set loader.rows")])
    (problem,) = excinfo.value.problems
    message = problem.message
    assert problem.path == "--set loader.rows" and "matches 2 steps of plugin 'loader'" in message
    assert "give each a `name:` in the workflow and write --set NAME.rows=VALUE" in message
    with pytest.raises(
        ConfigError, match="matches 2 steps of plugin 'test_memory_mapping.Loader'"
    ):  # a bare setting name as well
        load(tmp_path, text, [Override("rows", [5], "--set rows")])


def test_a_bare_setting_name_reaches_the_unnamed_step(tmp_path):
    workflow = load(tmp_path, TWO_DATA_SETS, [Override("rows", [5], "--set rows")])
    assert [s.plugin.config.rows for s in workflow.steps_in(Stage.INPUT)] == [[5], [10, 20]]


def test_the_readme_flow_table_shows_each_step_by_name_with_its_keys_in_memory(tmp_path):
    scripts = str(Path(__file__).resolve().parents[2] / "scripts")
    sys.path.insert(0, scripts)
    try:
        from document_flow import flow_markdown
    finally:
        sys.path.remove(scripts)
    rows = flow_markdown(load(tmp_path, TWO_DATA_SETS), "workflow.yaml").splitlines()
    assert "| THINK | `pref_count` | `pref.train`, `pref.stats`? | `totals.pref` |" in "\n".join(rows)
    assert "| `pref.train` | `pref_data` | `pref_count` |" in rows
    assert "| `data.train` | `test_memory_mapping.Loader` | `test_memory_mapping.Counter` |" in rows
