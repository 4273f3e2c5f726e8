"""Each built-in plugin's hand-offs are complete: its module reads and writes exactly the memory keys
it declares, and only the plugin modules touch memory (their helpers take values)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from entity_training.context import HandOffs
from entity_training.registry import DISTRIBUTION, entry_point_plugins, resolve_plugin
from plugins import memory_keys

PLUGINS = Path(memory_keys.__file__).resolve().parent
ACCESS = {"recall": "reads", "has": "reads", "remember": "writes"}
BUILTINS = sorted(entry_point_plugins(DISTRIBUTION))


def memory_accesses(path: Path) -> list[tuple[str, str, int]]:
    """(reads | writes, key, line) for each ``context.recall/has/remember(memory_keys.NAME)`` in ``path``
    (a key held in a variable is left to the run-time check, which the test suite makes strict)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ACCESS or (node.func.attr == "has" and "context" not in ast.unparse(node.func.value)):
            continue
        key = node.args[0] if node.args else None
        if not isinstance(key, ast.Attribute):
            continue
        found.append((ACCESS[node.func.attr], getattr(memory_keys, key.attr), node.lineno))
    return found


@pytest.mark.parametrize("name", BUILTINS)
def test_a_plugin_module_reads_and_writes_what_its_plugin_declares(name):
    cls = resolve_plugin(name, []).cls
    declared = HandOffs.of(cls)
    accesses = memory_accesses(Path(inspect.getsourcefile(cls)))
    undeclared = [
        f"line {line}: {access} {key}" for access, key, line in accesses if key not in getattr(declared, access)
    ]
    assert not undeclared, f"{name} does not declare: {undeclared}"
    used = {key for _, key, _ in accesses}
    unused = sorted(declared.reads - used)
    assert not unused, f"{name} declares keys it never touches: {unused}"


def test_only_the_plugin_modules_touch_memory():
    modules = {Path(inspect.getsourcefile(resolve_plugin(name, []).cls)) for name in BUILTINS}
    helpers = [path for path in sorted(PLUGINS.rglob("*.py")) if path not in modules]
    touching = [f"{path.relative_to(PLUGINS)}:{line}" for path in helpers for _, _, line in memory_accesses(path)]
    assert not touching, f"helpers take values, not the context: {touching}"
