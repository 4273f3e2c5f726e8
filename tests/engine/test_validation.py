"""Loading a workflow validates everything first and reports every problem with file and line."""

from __future__ import annotations

import pytest
from helpers.engine import load
from helpers.workflows import write_yaml
from pydantic import ValidationError

from entity_training.errors import ConfigError
from entity_training.overrides import Override, parse_set_argument
from entity_training.workflow import load_workflow


def problems_of(excinfo) -> list:
    return excinfo.value.problems


def test_valid_workflow_loads_with_case_insensitive_stages(tmp_path):
    workflow = load(
        tmp_path,
        """
        run: {name: t, seed: 3}
        workflow:
          input:
            - plugin: sample_plugins.Writer
          DO:
            - plugin: sample_plugins.Summer
        """,
    )
    assert [s.stage.value for s in workflow.steps] == ["INPUT", "DO"]
    assert workflow.run.seed == 3


def test_malformed_yaml_reports_the_line(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, "workflow:\n  input:\n    - plugin: [unclosed\n")
    problem = problems_of(excinfo)[0]
    assert problem.line == 4 or problem.line == 3
    assert "invalid YAML" in problem.message and problem.file.endswith("workflow.yaml")


def test_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        load(tmp_path, "   \n")


def test_config_that_is_a_list(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping"):
        load(tmp_path, "- plugin: sample_plugins.Writer\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_workflow(tmp_path / "nope.yaml")


def test_unknown_stage_name(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, "workflow:\n  TRAIN:\n    - plugin: sample_plugins.Writer\n")
    problem = problems_of(excinfo)[0]
    assert "unknown stage 'TRAIN'" in problem.message and "INPUT" in problem.message
    assert problem.line == 2


def test_unknown_plugin_lists_known_ones(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, "workflow:\n  input:\n    - plugin: dataset_laoder\n")
    problem = problems_of(excinfo)[0]
    assert "unknown plugin 'dataset_laoder'" in problem.message
    assert "dataset_loader" in problem.message  # the known names are listed
    assert problem.line == 3 and problem.path == "workflow.input[0].plugin"


def test_plugin_in_a_stage_it_does_not_support(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, "workflow:\n  OUTPUT:\n    - plugin: sample_plugins.Writer\n")
    assert "cannot run in stage OUTPUT; move it to: INPUT" in problems_of(excinfo)[0].message


def test_unknown_config_key_suggests_the_close_one(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(
            tmp_path,
            """
            workflow:
              input:
                - plugin: sample_plugins.Recorder
                  config:
                    lable: x
            """,
        )
    problem = problems_of(excinfo)[0]
    assert "unknown key 'lable'; did you mean 'label'?" in problem.message
    assert problem.line == 5 and problem.path == "workflow.input[0].config.lable"


def test_wrong_type_and_out_of_range_are_both_reported(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(
            tmp_path,
            """
            workflow:
              input:
                - plugin: sample_plugins.Recorder
                  config:
                    rate: 5
                    mode: c
                - plugin: sample_plugins.Writer
                  config:
                    count: many
            """,
        )
    messages = {p.path: p.message for p in problems_of(excinfo)}
    assert "less than or equal to 1" in messages["workflow.input[0].config.rate"]
    assert "'a' or 'b'" in messages["workflow.input[0].config.mode"]
    assert "valid integer" in messages["workflow.input[1].config.count"]
    assert {p.line for p in problems_of(excinfo)} == {5, 6, 9}


def test_missing_dependency(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, "workflow:\n  DO:\n    - plugin: sample_plugins.Summer\n")
    assert "needs 'numbers', which no plugin before it provides" in problems_of(excinfo)[0].message


def test_a_declaration_that_is_a_string_is_refused(tmp_path):
    text = "workflow:\n  DO:\n    - plugin: sample_plugins.OneKeyNotATuple\n    - plugin: sample_plugins.Summer\n"
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text)
    messages = [p.message for p in problems_of(excinfo)]
    assert "must be a tuple of memory keys, e.g. ('dataset.train',); got 'numbers'" in messages[0]
    assert "needs 'numbers'" in messages[1]  # the other plugins are still checked
    assert len(messages) == 2


def test_dependency_provided_too_late_says_so(tmp_path):
    workflow_text = """
    workflow:
      DO:
        - plugin: sample_plugins.Summer
      INPUT: []
    """
    with pytest.raises(ConfigError, match="no plugin before it provides"):
        load(tmp_path, workflow_text)


def test_tool_provided_twice(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(
            tmp_path,
            """
            workflow:
              PARSE:
                - plugin: sample_plugins.Calculator
                - plugin: sample_plugins.OtherCalculator
            """,
        )
    message = problems_of(excinfo)[0].message
    assert "tool 'double' is offered by both" in message and "OtherCalculator" in message


def test_unknown_top_level_key_and_run_key(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, "runn: {}\nrun: {sed: 1}\nworkflow:\n  input:\n    - plugin: sample_plugins.Writer\n")
    messages = [p.message for p in problems_of(excinfo)]
    assert any("unknown key 'runn'; did you mean 'run'?" in m for m in messages)
    assert any("unknown key 'sed'; did you mean 'seed'?" in m for m in messages)


def test_duplicate_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="appears twice"):
        load(tmp_path, "workflow:\n  input:\n    - plugin: sample_plugins.Writer\n  INPUT: []\nrun: {}\nrun: {}\n")


def test_all_problems_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(
            tmp_path,
            """
            workflow:
              input:
                - plugin: no_such_plugin
                - plugin: sample_plugins.Recorder
                  config: {lable: 1}
              BOGUS: []
            """,
        )
    assert len(problems_of(excinfo)) == 3


def test_env_interpolation_with_default(tmp_path):
    text = """
    run:
      name: ${RUN_NAME}
      output_dir: ${OUT:-outputs/x}
    workflow:
      input:
        - plugin: sample_plugins.Writer
          config:
            count: ${COUNT:-2}
    """
    workflow = load(tmp_path, text, env={"RUN_NAME": "from-env"})
    assert workflow.run.name == "from-env" and workflow.run.output_dir == "outputs/x"
    assert workflow.steps[0].plugin.config.count == 2


def test_undefined_variable_without_default(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(
            tmp_path,
            "run:\n  name: ${NOT_SET_ANYWHERE}\nworkflow:\n  input:\n    - plugin: sample_plugins.Writer\n",
            env={},
        )
    problem = problems_of(excinfo)[0]
    assert "${NOT_SET_ANYWHERE} is not set" in problem.message and problem.line == 2


def test_interpolation_never_executes(tmp_path):
    workflow = load(
        tmp_path,
        "run:\n  name: '$(touch pwned) `id` $${HOME}'\nworkflow:\n  input:\n    - plugin: sample_plugins.Writer\n",
        env={},
    )
    assert workflow.run.name == "$(touch pwned) `id` ${HOME}"
    assert not (tmp_path / "pwned").exists()


WRITER = "workflow:\n  input:\n    - plugin: sample_plugins.Writer\n      config: {count: 2}\n  DO:\n    - plugin: sample_plugins.Summer\n"


def test_set_overrides_plugin_key_run_key_and_parses_scalars(tmp_path):
    overrides = [
        parse_set_argument("writer.count=5"),
        parse_set_argument("run.seed=9"),
        parse_set_argument("run.name=abc"),
    ]
    workflow = load(tmp_path, WRITER, overrides)
    assert workflow.steps[0].plugin.config.count == 5
    assert workflow.run.seed == 9 and workflow.run.name == "abc"


def test_set_by_stage_path_and_bare_field_name(tmp_path):
    workflow = load(tmp_path, WRITER, [parse_set_argument("workflow.input.0.config.count=7")])
    assert workflow.steps[0].plugin.config.count == 7
    workflow = load(tmp_path, WRITER, [Override("count", 4, "--count")])
    assert workflow.steps[0].plugin.config.count == 4


def test_set_on_a_key_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, WRITER, [parse_set_argument("writer.cuont=5")])
    problem = problems_of(excinfo)[0]
    assert problem.file == "--set writer.cuont"
    assert "unknown key 'cuont'; did you mean 'count'?" in problem.message


def test_set_on_an_unknown_plugin_and_bad_syntax(tmp_path):
    with pytest.raises(ConfigError, match="no plugin named 'trainer'"):
        load(tmp_path, WRITER, [parse_set_argument("trainer.lr=1")])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_argument("no-equals-sign")


def test_named_flag_without_a_matching_setting(tmp_path):
    with pytest.raises(ConfigError, match="no plugin in this workflow has a setting named 'learning_rate'"):
        load(tmp_path, WRITER, [Override("learning_rate", 1e-4, "--lr")])


def test_plugin_config_is_immutable_and_rejects_extra_keys():
    from sample_plugins import Recorder

    plugin = Recorder({"label": "x"})
    with pytest.raises(ValidationError, match="frozen"):
        plugin.config.label = "y"
    with pytest.raises(ValidationError, match="Extra inputs"):
        Recorder({"nope": 1})


def test_non_utf8_workflow_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"workflow:\n  input: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_workflow(path)


def test_workflow_written_to_disk_can_be_revalidated(tmp_path):
    path = write_yaml(tmp_path, WRITER)
    assert len(load_workflow(path).steps) == 2


# A folder plugin whose check_workflow reads another plugin's setting by field name.
CROSS_CHECKER = """
from pydantic import Field

from entity_training import Plugin, PluginConfig, Stage
from entity_training.plugin import Finding


class CrossChecker(Plugin):
    name = "cross_checker"
    supported_stages = (Stage.OUTPUT,)

    class ConfigModel(PluginConfig):
        limit: int = Field(10, gt=0, description="The most numbers this plugin accepts.")
        label: str = Field("x", description="A setting it ignores when the numbers are few.")

    def check_workflow(self, plugins):
        count = next(p.config.count for p in plugins if "count" in type(p.config).model_fields)
        findings = []
        if count > self.config.limit:
            findings.append(Finding(f"count {count} is above limit {self.config.limit}", key="limit", error=True))
        if count < 3 and "label" in self.config.model_fields_set:
            findings.append(Finding("label ignored: fewer than 3 numbers", key="label"))
        return findings
"""

CROSS_WORKFLOW = """
plugin_dirs: [plugins]
workflow:
  INPUT:
    - plugin: sample_plugins.Writer
      config: {count: 2}
  OUTPUT:
    - plugin: cross_checker
      config:
        limit: 5
        label: shown
"""


def _cross_workflow(tmp_path, overrides=None):
    folder = tmp_path / "plugins" / "cross_checker"
    folder.mkdir(parents=True)
    (folder / "plugin.py").write_text(CROSS_CHECKER, encoding="utf-8")
    return load(tmp_path, CROSS_WORKFLOW, overrides)


def test_check_workflow_notices_are_located_and_kept_on_the_workflow(tmp_path):
    workflow = _cross_workflow(tmp_path)
    [notice] = workflow.notices
    assert notice.line == 10 and notice.path == "workflow.OUTPUT[0].config.label"
    assert notice.message == "cross_checker: label ignored: fewer than 3 numbers"


def test_check_workflow_errors_stop_the_load_and_see_the_overridden_values(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        _cross_workflow(tmp_path, [Override("count", 8, "--count")])
    [problem] = problems_of(excinfo)
    assert problem.message == "cross_checker: count 8 is above limit 5"
    assert problem.line == 9 and problem.path == "workflow.OUTPUT[0].config.limit"
    with pytest.raises(ConfigError) as excinfo:
        _cross_workflow(tmp_path / "again", [Override("count", 8, "--count"), parse_set_argument("limit=6")])
    assert problems_of(excinfo)[0].file == "--set limit"  # the value to fix came from the command line


def test_check_workflow_is_skipped_when_a_config_is_already_invalid(tmp_path):
    # The Writer is not built, so the checker would find no `count`: it must not be asked.
    with pytest.raises(ConfigError) as excinfo:
        _cross_workflow(tmp_path, [parse_set_argument("writer.count=0")])
    assert [p.file for p in problems_of(excinfo)] == ["--set writer.count"]
