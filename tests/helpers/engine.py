"""Helpers for the engine tests: write a workflow file, load it, run it."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from entity_training.executor import RunResult, WorkflowExecutor
from entity_training.workflow import Override, Workflow, load_workflow


def write_workflow(tmp_path: Path, text: str, name: str = "workflow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, overrides: list[Override] | None = None, env: dict | None = None) -> Workflow:
    return load_workflow(write_workflow(tmp_path, text), overrides, env=env)


def run(workflow: Workflow, run_dir: Path, **kwargs) -> RunResult:
    return asyncio.run(WorkflowExecutor(workflow, run_dir, **kwargs).run())
