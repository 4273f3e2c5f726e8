"""The top-level package is light: its public names load on first use."""

from __future__ import annotations

import pytest

import entity_training


def test_every_public_name_resolves_to_the_defining_module_object():
    from entity_training.errors import InputError
    from entity_training.plugin import Plugin, PluginConfig

    assert entity_training.Plugin is Plugin
    assert entity_training.PluginConfig is PluginConfig
    assert entity_training.InputError is InputError
    for name in entity_training.__all__:
        assert getattr(entity_training, name) is not None
        assert name in dir(entity_training)


def test_from_import_of_public_names_works_for_plugin_authors():
    namespace: dict = {}
    exec("from entity_training import Plugin, PluginConfig, Stage, tool, PluginContext", namespace)
    assert issubclass(namespace["PluginConfig"], __import__("pydantic").BaseModel)
    assert namespace["Stage"].INPUT.value


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        entity_training.no_such_name  # noqa: B018
