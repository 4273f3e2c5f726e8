"""Read YAML safely while remembering the line of every key, so errors can point at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from entity_training.errors import ConfigError, Problem

YamlPath = tuple  # ("workflow", "DO", 0, "config", "learning_rate")


def format_path(path: YamlPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class SourceMap:
    """Line numbers (1-based) of the keys and items of one YAML document."""

    def __init__(self, file: str | None = None):
        self.file = file
        self.lines: dict[YamlPath, int] = {}

    def line_of(self, path: YamlPath) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def problem(self, message: str, path: YamlPath) -> Problem:
        return Problem(message, file=self.file, line=self.line_of(path), path=format_path(path) or None)


def _record_lines(node: yaml.Node, path: YamlPath, source: SourceMap, problems: list[Problem]) -> None:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append(
                    Problem(
                        f"key {key!r} appears twice; remove one", file=source.file, line=key_node.start_mark.line + 1
                    )
                )
            seen.add(key)
            child = (*path, key)
            source.lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, source, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), source, problems)


MAX_FILE_BYTES = 2**20  # the YAML parser is pure Python: a 300 MB file takes minutes
# A large workflow has a few thousand values; anchors and aliases can multiply that without bound
# ("billion laughs": nine levels of nine aliases are 387M values).
MAX_EXPANDED_VALUES = 100_000


def _check_alias_expansion(root: yaml.Node, file: str | None) -> None:
    """Refuse a document whose aliases expand past MAX_EXPANDED_VALUES, or that contains itself."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(
                Problem("an alias refers to the value that contains it; remove the cycle", file=file, line=_line(node))
            )
        open_nodes.add(key)
        children = node.value if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) else []
        total = 1
        for child in children:
            total += sum(size(part) for part in child) if isinstance(child, tuple) else size(child)
            if total > MAX_EXPANDED_VALUES:
                raise ConfigError(
                    Problem(
                        f"the document expands to more than {MAX_EXPANDED_VALUES:,} values through anchors and "
                        "aliases (&name, *name); a workflow is far smaller. Write the values out, or alias fewer.",
                        file=file,
                        line=_line(node),
                    )
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def load_yaml_file(path: Path) -> tuple[Any, SourceMap]:
    """Parse one YAML file with the safe loader. Raises ConfigError with the file and line."""
    name = str(path)
    if not path.exists():
        raise ConfigError(Problem("file not found; check the path given to --config", file=name))
    if path.is_dir():
        raise ConfigError(Problem("is a directory, not a YAML workflow file", file=name))
    if not path.is_file():  # reading a FIFO waits forever, a device never ends
        raise ConfigError(Problem("is not a regular file (a pipe or a device?); give a YAML workflow file", file=name))
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            Problem(
                f"is {size / 2**20:.0f} MiB; a workflow file is a few KiB (the limit is "
                f"{MAX_FILE_BYTES // 2**20} MiB). Is this the right file?",
                file=name,
            )
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            Problem(f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8", file=name)
        ) from exc
    return parse_yaml_text(text, name)


def parse_yaml_text(text: str, file: str | None = None) -> tuple[Any, SourceMap]:
    source = SourceMap(file)
    if not text.strip():
        raise ConfigError(Problem("the file is empty; a workflow needs at least a `workflow:` section", file=file))
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_alias_expansion(node, file)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(
            Problem(f"invalid YAML: {what}; fix the syntax near this line", file=file, line=line)
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(Problem(f"invalid YAML: {exc}", file=file)) from exc
    except RecursionError as exc:  # the parser and the checks recurse once per nesting level
        raise ConfigError(
            Problem("the document is nested too deeply to read; a workflow needs a few levels", file=file)
        ) from exc
    if node is None:
        raise ConfigError(Problem("the file holds no YAML document; a workflow needs a `workflow:` section", file=file))
    problems: list[Problem] = []
    _record_lines(node, (), source, problems)
    if problems:
        raise ConfigError(problems)
    return data, source
