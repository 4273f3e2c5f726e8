"""Helpers for the engine tests: load a workflow from its text, run it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from entity_training.executor import RunResult, WorkflowExecutor
from entity_training.overrides import Override
from entity_training.workflow import Workflow, load_workflow
from helpers.workflows import write_yaml


def load(tmp_path: Path, text: str, overrides: list[Override] | None = None, env: dict | None = None) -> Workflow:
    return load_workflow(write_yaml(tmp_path, text, "workflow.yaml"), overrides, env=env)


def run(workflow: Workflow, run_dir: Path, **kwargs) -> RunResult:
    return asyncio.run(WorkflowExecutor(workflow, run_dir, **kwargs).run())
