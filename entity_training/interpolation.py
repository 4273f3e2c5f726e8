"""``${VAR}`` and ``${VAR:-default}`` in YAML string values, from the environment only.

Substitution is plain text: nothing is evaluated or executed. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from entity_training.errors import Problem
from entity_training.yaml_source import SourceMap, YamlPath

_PATTERN = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(
    data: Any, source: SourceMap, problems: list[Problem], env: Mapping[str, str] | None = None, path: YamlPath = ()
) -> Any:
    """Return ``data`` with variables substituted; undefined ones are added to ``problems``."""
    env = os.environ if env is None else env
    if isinstance(data, dict):
        return {key: interpolate(value, source, problems, env, (*path, key)) for key, value in data.items()}
    if isinstance(data, list):
        return [interpolate(value, source, problems, env, (*path, i)) for i, value in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            source.problem(
                f"environment variable ${{{name}}} is not set and has no default; "
                f"export {name}=... or write ${{{name}:-default}}",
                path,
            )
        )
        return match.group(0)

    return _PATTERN.sub(substitute, data)
