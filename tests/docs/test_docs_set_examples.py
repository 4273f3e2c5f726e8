"""Every documented ``--set KEY=VALUE`` example names a setting its plugin owns: each one is loaded,
without training, on the workflow its command names (configs/default.yaml when it names none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from entity_training.overrides import parse_set_argument
from entity_training.workflow import load_workflow

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SOURCES += [REPO / "entity_training" / "cli.py", REPO / "entity_training" / "arguments.py"]
SOURCES += sorted((REPO / "configs").glob("*.yaml"))
# "--set X=Y", and the "e.g. X=Y" of the --set help; placeholders (KEY=VALUE) are upper case.
EXAMPLE = re.compile(r"(?:--set\s+|e\.g\.\s+)([a-z_][\w.]*=[^\s`'\"),]+)")
WORKFLOW = re.compile(r"(?:configs|examples)/[\w./-]+\.yaml")


def _commands(text: str) -> list[str]:
    """The text's lines, with backslash-continued shell lines joined into one."""
    return re.sub(r"\\\n", " ", text).splitlines()


def _examples() -> list[tuple[str, str, list[str]]]:
    found = []
    for source in SOURCES:
        for number, line in enumerate(_commands(source.read_text(encoding="utf-8")), start=1):
            settings = EXAMPLE.findall(line)
            if settings:
                workflow = WORKFLOW.search(line)
                found.append(
                    (
                        f"{source.relative_to(REPO)}:{number}",
                        workflow[0] if workflow else "configs/default.yaml",
                        settings,
                    )
                )
    return found


EXAMPLES = _examples()


def test_the_documented_examples_are_found():
    sources = {where.split(":")[0] for where, _, _ in EXAMPLES}
    expected = {"README.md", "docs/API.md", "docs/TRAINING_GUIDE.md", "entity_training/cli.py"}
    assert expected | {"entity_training/arguments.py"} <= sources


@pytest.mark.parametrize(("where", "workflow", "settings"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_every_documented_set_example_is_accepted(where, workflow, settings, monkeypatch):
    monkeypatch.chdir(REPO)
    load_workflow(REPO / workflow, overrides=[parse_set_argument(setting) for setting in settings])
