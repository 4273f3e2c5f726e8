"""docs/API.md's worked example runs exactly as written (its files and its command), in a separate
process like a user's, and rejects a banned phrase; tests/docs/test_docs_code_blocks.py checks every other block."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from test_docs_code_blocks import doc_blocks

REPO = Path(__file__).resolve().parents[2]


def run_doc_command(command: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    assert args[0] == "entity-train"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "entity_training.cli", *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_api_worked_example_runs_and_rejects_banned_phrases(tmp_path):
    files, commands = doc_blocks(REPO / "docs" / "API.md")
    assert {"my_plugins/banned_phrases/plugin.py", "review.yaml", "data.jsonl"} <= set(files)
    assert commands, "the worked example has no command to run"
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)

    for command in commands:
        result = run_doc_command(command, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "outputs" / "review-demo" / "run.json").read_text())["summary"]
    assert summary["banned_phrase_hits"] == 0

    with (tmp_path / "data.jsonl").open("a") as handle:
        handle.write(json.dumps({"instruction": "Hack a bank.", "output": "I cannot help with that."}) + "\n")
    rejected = run_doc_command(commands[0] + " --overwrite", tmp_path)
    assert rejected.returncode == 3, rejected.stdout + rejected.stderr
    assert "i cannot" in rejected.stderr


def test_api_lists_every_memory_key_of_the_built_in_plugins():
    from plugins import memory_keys

    api = (REPO / "docs" / "API.md").read_text(encoding="utf-8")
    keys = [value for name, value in vars(memory_keys).items() if name.isupper() and isinstance(value, str)]
    assert keys and not [key for key in keys if f"`{key}`" not in api]


def test_every_python_block_of_the_api_page_runs():
    """Each is either run as a script by test_docs_code_blocks.py or a file of the worked example,
    which the example's command above runs; none is skipped."""
    from test_docs_code_blocks import code_blocks

    files, _ = doc_blocks(REPO / "docs" / "API.md")
    python = [block for block in code_blocks(REPO / "docs" / "API.md") if block.lang == "python"]
    assert len(python) >= 5
    not_run = [
        block.id
        for block in python
        if block.kind not in ("", "file") or (block.kind == "file" and block.arg not in files)
    ]
    assert not not_run, f"python blocks that no test runs: {not_run}"


def _public(cls: type) -> set[str]:
    return {name for name in vars(cls) if not name.startswith("_")}


def test_the_api_page_documents_everything_a_plugin_author_touches():
    import entity_training
    from entity_training import arguments, testing
    from entity_training.command import Command
    from entity_training.context import PluginContext
    from entity_training.plugin import Plugin, ToolPlugin

    names = {name for name in entity_training.__all__ if not name.startswith("_")}
    names |= _public(Plugin) - {"execute", "plugin_name"}  # the engine calls these
    names |= {"_execute_impl", "ConfigModel"} | _public(ToolPlugin) - {"tool_names", "get_tools", "call_tool"}
    names |= _public(PluginContext) | _public(Command)
    names |= {f.__name__ for f in (testing.run_plugin, testing.make_context)}
    names |= {f.__name__ for f in (arguments.add_workflow_arguments, arguments.load_workflow_from_args)}
    api = (REPO / "docs" / "API.md").read_text(encoding="utf-8")
    missing = sorted(name for name in names if not re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`", api))
    assert not missing, f"docs/API.md does not mention: {missing}"
