"""The top-level package is light: its public names load on first use."""

from __future__ import annotations

import ast
from pathlib import Path

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


# -- the engine's import graph ---------------------------------------------------------------------
ENGINE = Path(entity_training.__file__).resolve().parent


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    """(statement, imported module) for every import statement in ``tree``; ``from a import b`` gives
    ``a.b`` when that is a module of the engine, else ``a``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((node, submodule if submodule in ENGINE_MODULES else node.module))
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ENGINE_FILES = sorted(ENGINE.rglob("*.py"))
ENGINE_MODULES = {_module_name(path) for path in ENGINE_FILES}


def _module_level_statements(tree: ast.Module) -> list[ast.stmt]:
    """What runs at import: top-level statements (and the bodies of top-level if/try), except
    ``if TYPE_CHECKING:`` blocks; not function or class bodies."""
    out: list[ast.stmt] = []
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending += node.orelse
        elif isinstance(node, (ast.If, ast.Try)):
            pending += (
                node.body
                + node.orelse
                + getattr(node, "finalbody", [])
                + [statement for handler in getattr(node, "handlers", []) for statement in handler.body]
            )
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(node)
    return out


def test_the_engine_never_imports_the_plugins():
    """Built-in plugins and their commands reach the engine through entry points, like anyone's."""
    offenders = [
        f"{path.relative_to(ENGINE.parent)}:{node.lineno} imports {name}"
        for path in ENGINE_FILES
        for node, name in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if name == "plugins" or name.startswith("plugins.")
    ]
    assert not offenders, offenders


def test_no_import_cycle_between_engine_modules_at_module_level():
    graph: dict[str, set[str]] = {}
    for path in ENGINE_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        statements = ast.Module(body=_module_level_statements(tree), type_ignores=[])
        graph[_module_name(path)] = {name for _, name in _imports(statements) if name in ENGINE_MODULES}

    def cycle_from(module: str, trail: list[str]) -> list[str] | None:
        if module in trail:
            return [*trail[trail.index(module) :], module]
        for imported in sorted(graph[module]):
            found = cycle_from(imported, [*trail, module])
            if found:
                return found
        return None

    cycles = [cycle for module in sorted(graph) if (cycle := cycle_from(module, []))]
    assert not cycles, " -> ".join(cycles[0])


def test_cli_and_commands_do_not_import_each_other():
    """The cycle the command line used to have; the engine's commands take their arguments from
    ``entity_training.arguments``."""
    cli = {name for _, name in _imports(ast.parse((ENGINE / "cli.py").read_text(encoding="utf-8")))}
    commands = {name for _, name in _imports(ast.parse((ENGINE / "commands.py").read_text(encoding="utf-8")))}
    assert "entity_training.cli" not in commands
    assert "entity_training.commands" in cli


@pytest.mark.parametrize(
    ("environment", "main"),
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"RANK": "1", "LOCAL_RANK": "1"}, False),
        ({"RANK": "2", "LOCAL_RANK": "0"}, False),  # first process of the second machine
        ({"LOCAL_RANK": "1"}, False),
    ],
)
def test_the_main_process_is_rank_zero(monkeypatch, environment, main):
    from entity_training.distributed import is_main_process

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert is_main_process() is main


def _runtime_imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that ``tree`` imports when run, at any depth (inside functions too),
    leaving out ``if TYPE_CHECKING:`` blocks; ``from a import b`` counts ``a.b`` when it is a module."""
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for child in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return found & modules


def test_no_import_cycle_between_plugin_modules_even_inside_functions():
    """A plugin's helpers never import the plugin back (model_export and its export job once did)."""
    root = ENGINE.parent / "plugins"
    files = {".".join(p.relative_to(ENGINE.parent).with_suffix("").parts): p for p in root.rglob("*.py")}
    files = {name.removesuffix(".__init__"): path for name, path in files.items()}
    graph = {
        name: _runtime_imports(ast.parse(path.read_text(encoding="utf-8")), set(files)) - {name}
        for name, path in files.items()
    }
    # A package's __init__ imported for its submodule is not an edge back into the package.
    graph = {name: {m for m in imported if not name.startswith(f"{m}.")} for name, imported in graph.items()}

    def cycle_from(module: str, trail: list[str], seen: set[str]) -> list[str] | None:
        if module in trail:
            return [*trail[trail.index(module) :], module]
        if module in seen:
            return None
        seen.add(module)
        for imported in sorted(graph[module]):
            found = cycle_from(imported, [*trail, module], seen)
            if found:
                return found
        return None

    seen: set[str] = set()
    cycles = [cycle for module in sorted(graph) if (cycle := cycle_from(module, [], seen))]
    assert not cycles, " -> ".join(cycles[0])
