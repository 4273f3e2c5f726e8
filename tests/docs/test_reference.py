"""The configuration reference and the JSON Schema are generated from the code and kept current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from entity_training.plugin import PluginConfig
from entity_training.registry import DISTRIBUTION, entry_point_plugins, resolve_plugin

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(entry_point_plugins(DISTRIBUTION)))
def test_every_builtin_plugin_config_is_strict_and_described(name):
    cls = resolve_plugin(name, []).cls
    assert issubclass(cls.ConfigModel, PluginConfig), "unknown keys must be errors"
    assert cls.description, f"{name} has no description"
    undocumented = [field for field, info in cls.ConfigModel.model_fields.items() if not info.description]
    assert not undocumented, f"{name}: fields without a description: {undocumented}"


def test_config_reference_and_schema_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate_reference.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_example_config_points_editors_at_the_schema():
    for config in sorted((REPO / "configs").glob("*.yaml")):
        if config.name == "models.yaml":
            continue
        first = config.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=workflow.schema.json", config.name
