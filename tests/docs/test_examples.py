"""The examples: the plugin folder matches docs/API.md; the plugin package installs and runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.workflows import step, write_workflow
from test_docs_api import doc_blocks

REPO = Path(__file__).resolve().parents[2]


def test_plugin_folder_example_is_the_api_docs_example():
    files, _ = doc_blocks(REPO / "docs" / "API.md")
    for name in ("plugin.py", "config.yaml"):
        documented = files[f"my_plugins/banned_phrases/{name}"]
        assert (REPO / "examples" / "plugins" / "banned_phrases" / name).read_text() == documented


def test_plugin_package_installs_and_runs_by_entry_point(tmp_path):
    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(REPO / "examples" / "plugin_package"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    rows = [
        {"instruction": "Say hi.", "output": "Hi!"},
        {"instruction": "say HI.", "output": "hi!"},
        {"instruction": "Count to two.", "output": "One, two."},
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = step("dataset_loader", dataset_path="data.jsonl", validation_split=0.0, shuffle=False)
    write_workflow(tmp_path, run={"output_dir": "out"}, stages={"INPUT": [dataset, step("deduplicate")]})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    listing = subprocess.run(
        [sys.executable, "-m", "entity_training.cli", "list-plugins"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "deduplicate" in listing.stdout
    result = subprocess.run(
        [sys.executable, "-m", "entity_training.cli", "run", "wf.yaml", "--yes"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out" / "run.json").read_text())["summary"]
    assert summary["duplicates_removed"] == 1
