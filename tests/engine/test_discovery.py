"""Plugins are found by short name, dotted path, plugin folder and entry point."""

from __future__ import annotations

import sys
import textwrap

import pytest
from helpers.engine import load, run

from entity_training.errors import ConfigError
from entity_training.registry import ENTRY_POINT_GROUP, known_plugin_names, resolve_plugin

FOLDER_PLUGIN = '''
from pydantic import Field
from entity_training import Plugin, PluginConfig, Stage


class Greeter(Plugin):
    """Writes a greeting."""

    name = "greeter"
    supported_stages = (Stage.INPUT,)
    provides = ("greeting",)

    class ConfigModel(PluginConfig):
        greeting: str = Field("hello", description="What to say.")
        times: int = Field(1, gt=0, description="How often.")

    async def _execute_impl(self, context):
        context.remember("greeting", " ".join([self.config.greeting] * self.config.times))
        return "greeted"
'''


def make_folder_plugin(root, name="greeter", code=FOLDER_PLUGIN, config=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "plugin.py").write_text(textwrap.dedent(code))
    if config is not None:
        (folder / "config.yaml").write_text(textwrap.dedent(config))
    return folder


def test_dotted_path_with_dot_or_colon(tmp_path):
    assert resolve_plugin("sample_plugins.Writer", []).cls.__name__ == "Writer"
    assert resolve_plugin("sample_plugins:Writer", []).origin == "dotted path"


def test_dotted_path_that_is_not_a_plugin(tmp_path):
    with pytest.raises(ConfigError, match="is not a Plugin subclass"):
        load(tmp_path, "workflow:\n  input:\n    - plugin: sample_plugins.CALLS\n")


def test_builtin_short_names_are_known():
    names = known_plugin_names([])
    for name in ("dataset_loader", "training_config", "data_preparation", "fine_tuning", "evaluation", "model_export"):
        assert name in names


def test_folder_plugin_with_defaults_from_config_yaml(tmp_path):
    make_folder_plugin(tmp_path / "my_plugins", config="description: greets\ndefaults:\n  greeting: hi\n  times: 2\n")
    text = "plugin_dirs: [my_plugins]\nworkflow:\n  input:\n    - plugin: greeter\n      config: {times: 3}\n"
    workflow = load(tmp_path, text)
    assert workflow.steps[0].plugin.config.greeting == "hi"  # default from config.yaml
    assert workflow.steps[0].plugin.config.times == 3  # the workflow wins
    result = run(workflow, tmp_path / "run")
    assert result.memory.get("greeting") == "hi hi hi"


def test_folder_plugin_that_raises_at_import_names_the_folder(tmp_path):
    make_folder_plugin(tmp_path / "plugs", name="broken", code="raise RuntimeError('bad import')\n")
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, "plugin_dirs: [plugs]\nworkflow:\n  input:\n    - plugin: broken\n")
    message = excinfo.value.problems[0].message
    assert "broken" in message and "raised RuntimeError at import: bad import" in message


def test_folder_plugins_are_listed_among_known_plugins(tmp_path):
    make_folder_plugin(tmp_path / "plugs")
    assert "greeter" in known_plugin_names([tmp_path / "plugs"])


def test_entry_point_plugin_from_an_installed_package(tmp_path, monkeypatch):
    """Install a tiny distribution (code + dist-info with an entry point) onto sys.path."""
    site = tmp_path / "site"
    package = site / "ep_plugin_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(FOLDER_PLUGIN).replace('name = "greeter"', 'name = "ep_greeter"')
    )
    dist_info = site / "ep_plugin_pkg-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin-pkg\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nep_greeter = ep_plugin_pkg:Greeter\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        assert "ep_greeter" in known_plugin_names([])
        workflow = load(tmp_path, "workflow:\n  input:\n    - plugin: ep_greeter\n")
        assert workflow.steps[0].origin.startswith("entry point")
        assert run(workflow, tmp_path / "run").memory.get("greeting") == "hello"
    finally:
        sys.modules.pop("ep_plugin_pkg", None)


COMMAND_PACKAGE = """
from entity_training.command import Command
from entity_training.errors import ConfigError


class Hello(Command):
    help = "Say hello."

    def add_arguments(self, parser):
        parser.add_argument("who")

    def run(self, args):
        if args.who == "nobody":
            raise ConfigError("nobody to greet")
        print(f"hello {args.who}")
        return 0
"""


def _install_distribution(site, name: str, code: str, entry_points: str) -> None:
    """A tiny installed distribution (code + dist-info with entry points) under ``site``."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(textwrap.dedent(code))
    dist_info = site / f"{name}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(entry_points)


def test_a_package_contributes_a_command(tmp_path, monkeypatch, capsys):
    from entity_training.cli import command_names, main
    from entity_training.command import COMMAND_ENTRY_POINT_GROUP

    site = tmp_path / "site"
    _install_distribution(
        site,
        "hello_command_pkg",
        COMMAND_PACKAGE,
        f"[{COMMAND_ENTRY_POINT_GROUP}]\nhello = hello_command_pkg:Hello\nbroken = hello_command_pkg:Missing\n",
    )
    monkeypatch.syspath_prepend(str(site))
    try:
        assert {"hello", "broken", "plan", "preview"} <= set(command_names())
        assert main(["hello", "world"]) == 0 and "hello world" in capsys.readouterr().out
        assert main(["hello", "nobody"]) == 2 and "nobody to greet" in capsys.readouterr().err
        # A package that fails to load costs only its own command.
        assert main(["broken"]) == 1 and "Missing" in capsys.readouterr().err
        assert main(["--help"]) == 0 and "Say hello." in capsys.readouterr().out
    finally:
        sys.modules.pop("hello_command_pkg", None)


def test_the_built_in_plugins_are_entry_points_of_this_distribution():
    from entity_training.registry import DISTRIBUTION, entry_point_plugins

    builtins = entry_point_plugins(DISTRIBUTION)
    assert {"dataset_loader", "training_config", "fine_tuning", "model_export"} <= set(builtins)
    assert resolve_plugin("fine_tuning", []).origin == f"entry point {builtins['fine_tuning'].value}"
