"""Ollama TEMPLATE text from a TurnFormat, and a renderer for the Go-template subset we emit.

Literal text is written as quoted Go strings inside actions, so the ``{{-`` trim markers used
for layout can never eat a newline that belongs to the prompt. The renderer lets the export
check, before shipping a Modelfile, that Ollama will build exactly the training prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from plugins.export.chat_template import ROLES, TurnFormat


def go_string(text: str) -> str:
    """A Go interpreted string literal (JSON escapes are valid Go escapes)."""
    return json.dumps(text, ensure_ascii=False)


def ollama_template(turn_format: TurnFormat) -> str:
    """Go template over Ollama's ``.Messages`` that reproduces the training prompt."""
    lines = ["{{- range $i, $_ := .Messages }}", "{{- $last := eq (len (slice $.Messages $i)) 1 }}"]
    if turn_format.header:
        lines.append(f"{{{{- if eq $i 0 }}}}{{{{ {go_string(turn_format.header)} }}}}{{{{ end }}}}")
    if turn_format.default_system:
        lines.append(
            f'{{{{- if and (eq $i 0) (ne .Role "system") }}}}{{{{ {go_string(turn_format.default_system)} }}}}{{{{ end }}}}'
        )
    keyword = "if"
    for role in ROLES:
        if role not in turn_format.prefixes:
            continue
        prefix, suffix = go_string(turn_format.prefixes[role]), go_string(turn_format.suffixes[role])
        lines.append(f'{{{{- {keyword} eq .Role "{role}" }}}}{{{{ {prefix} }}}}{{{{ .Content }}}}{{{{ {suffix} }}}}')
        keyword = "else if"
    lines.append("{{- end }}")
    lines.append(
        f'{{{{- if and $last (ne .Role "assistant") }}}}{{{{ {go_string(turn_format.generation_prompt)} }}}}{{{{ end }}}}'
    )
    lines.append("{{- end }}")
    return "\n".join(lines)


# ---- a renderer for that subset ---------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+)')


@dataclass
class _Node:
    kind: str  # text | out | if | range | assign
    value: Any = None
    body: list | None = None
    branches: list | None = None  # for if: [(condition, body)], condition None = else


def render_go_template(template: str, data: dict[str, Any]) -> str:
    """Render ``template`` with Ollama-style data (``Messages`` of ``Role``/``Content``, ``System``)."""
    nodes, _ = _parse(_lex(template), 0, top=True)
    out: list[str] = []
    _exec(nodes, {"$": data, ".": data}, out)
    return "".join(out)


def _lex(template: str) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if match.group(1):
            text = text.rstrip()
        if items and items[-1][0] == "trim_next":
            items.pop()
            text = text.lstrip()
        items.append(("text", text))
        items.append(("action", match.group(2).strip()))
        if match.group(3):
            items.append(("trim_next", ""))
        pos = match.end()
    tail = template[pos:]
    if items and items[-1][0] == "trim_next":
        items.pop()
        tail = tail.lstrip()
    items.append(("text", tail))
    return items


def _parse(items: list[tuple[str, str]], pos: int, top: bool = False) -> tuple[list[_Node], int]:
    nodes: list[_Node] = []
    while pos < len(items):
        kind, value = items[pos]
        pos += 1
        if kind == "text":
            if value:
                nodes.append(_Node("text", value))
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in ("end", "else"):
            if top:
                raise ValueError(f"unexpected {{{{ {value} }}}}")
            return nodes, pos - 1
        if word == "if":
            branches = []
            condition = value[3:]
            while True:
                body, pos = _parse(items, pos)
                branches.append((condition, body))
                closing = items[pos][1]
                pos += 1
                if closing == "end":
                    break
                condition = closing[len("else if ") :] if closing.startswith("else if ") else None
            nodes.append(_Node("if", branches=branches))
        elif word == "range":
            header = value[len("range ") :]
            names, _, expression = header.partition(":=")
            body, pos = _parse(items, pos)
            pos += 1  # the {{ end }}
            nodes.append(_Node("range", value=([n.strip() for n in names.split(",")], expression.strip()), body=body))
        elif ":=" in value:
            name, _, expression = value.partition(":=")
            nodes.append(_Node("assign", value=(name.strip(), expression.strip())))
        else:
            nodes.append(_Node("out", value=value))
    return nodes, pos


def _exec(nodes: list[_Node], scope: dict[str, Any], out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "out":
            out.append(str(_eval(node.value, scope)))
        elif node.kind == "assign":
            scope[node.value[0]] = _eval(node.value[1], scope)
        elif node.kind == "if":
            for condition, body in node.branches:
                if condition is None or _truthy(_eval(condition, scope)):
                    _exec(body, scope, out)
                    break
        elif node.kind == "range":
            names, expression = node.value
            for index, element in enumerate(_eval(expression, scope) or []):
                inner = dict(scope)
                inner[names[0]] = index
                if len(names) > 1:
                    inner[names[1]] = element
                inner["."] = element
                _exec(node.body, inner, out)


def _truthy(value: Any) -> bool:
    return bool(value)


_FUNCTIONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "and": lambda *a: all(map(_truthy, a)),
    "or": lambda *a: any(map(_truthy, a)),
    "not": lambda a: not _truthy(a),
    "len": len,
    "slice": lambda seq, start, end=None: seq[start:end],
    "index": lambda seq, i: seq[i],
}


def _eval(expression: str, scope: dict[str, Any]) -> Any:
    tokens = [t for t in _TOKEN.findall(expression) if t]
    value, pos = _eval_pipeline(tokens, 0, scope)
    if pos != len(tokens):
        raise ValueError(f"cannot evaluate {expression!r}")
    return value


def _eval_pipeline(tokens: list[str], pos: int, scope: dict[str, Any]) -> tuple[Any, int]:
    head = tokens[pos]
    if head in _FUNCTIONS:
        args = []
        pos += 1
        while pos < len(tokens) and tokens[pos] != ")":
            arg, pos = _eval_operand(tokens, pos, scope)
            args.append(arg)
        return _FUNCTIONS[head](*args), pos
    return _eval_operand(tokens, pos, scope)


def _eval_operand(tokens: list[str], pos: int, scope: dict[str, Any]) -> tuple[Any, int]:
    token = tokens[pos]
    if token == "(":
        value, pos = _eval_pipeline(tokens, pos + 1, scope)
        return value, pos + 1  # skip ")"
    if token.startswith('"'):
        return json.loads(token), pos + 1
    if re.fullmatch(r"-?\d+", token):
        return int(token), pos + 1
    return _lookup(token, scope), pos + 1


def _lookup(path: str, scope: dict[str, Any]) -> Any:
    if path.startswith("$"):
        name, _, fields = path.partition(".")
        value = scope[name]
    else:
        value, fields = scope["."], path[1:]
    for name in filter(None, fields.split(".")):
        value = value.get(name) if isinstance(value, dict) else getattr(value, name)
    return value
