"""The README's "How a run flows" tables are generated from the plugins' declarations and current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_flow_tables_match_the_declarations():
    done = subprocess.run(
        [sys.executable, "scripts/document_flow.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_the_tables_name_every_step_of_the_default_workflow_with_its_keys():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from document_flow import flow_markdown
    finally:
        sys.path.remove(str(REPO / "scripts"))
    from entity_training.workflow import load_workflow

    workflow = load_workflow(REPO / "configs" / "default.yaml")
    text = flow_markdown(workflow, "configs/default.yaml")
    for step in workflow.steps:
        row = next(line for line in text.splitlines() if f"| `{step.reference}` |" in line)
        for key in (*step.plugin.dependencies, *step.plugin.provides):
            assert f"`{key}`" in row
