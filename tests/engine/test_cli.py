"""The command line: exit codes, messages without tracebacks, signals, run directories."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.cli import run_train
from helpers.workflows import write_yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ML_LIBRARIES = ("torch", "transformers", "datasets")


cli = functools.partial(run_train, timeout=60)


GOOD = """
run: {name: demo, output_dir: out}
workflow:
  input:
    - plugin: sample_plugins.Writer
      config: {count: 3}
  DO:
    - plugin: sample_plugins.Summer
"""

BAD_INPUTS = {
    "malformed_yaml": ("workflow:\n  input:\n    - plugin: [x\n  DO: 3\n", [], "invalid YAML"),
    "empty_file": ("\n", [], "empty"),
    "list_config": ("- plugin: sample_plugins.Writer\n", [], "must be a mapping"),
    "unknown_stage": ("workflow:\n  TRAINING:\n    - plugin: sample_plugins.Writer\n", [], "unknown stage 'TRAINING'"),
    "unknown_plugin": ("workflow:\n  input:\n    - plugin: nope\n", [], "unknown plugin 'nope'"),
    "wrong_stage": ("workflow:\n  OUTPUT:\n    - plugin: sample_plugins.Writer\n", [], "cannot run in stage OUTPUT"),
    "unknown_key": (
        "workflow:\n  input:\n    - plugin: sample_plugins.Writer\n      config: {cont: 1}\n",
        [],
        "did you mean 'count'",
    ),
    "wrong_type": (
        "workflow:\n  input:\n    - plugin: sample_plugins.Writer\n      config: {count: lots}\n",
        [],
        "valid integer",
    ),
    "undefined_var": (
        "run: {name: '${UNDEFINED_FOR_TEST}'}\nworkflow:\n  input:\n    - plugin: sample_plugins.Writer\n",
        [],
        "is not set",
    ),
    "set_unknown_key": (GOOD, ["--set", "writer.nope=1"], "unknown key 'nope'"),
    "two_tools": (
        "workflow:\n  PARSE:\n    - plugin: sample_plugins.Calculator\n    - plugin: sample_plugins.OtherCalculator\n",
        [],
        "tool 'double'",
    ),
    "broken_folder_plugin": ("plugin_dirs: [plugs]\nworkflow:\n  input:\n    - plugin: broken\n", [], "plugs/broken"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_a_located_message_and_no_traceback(tmp_path, case):
    text, extra, expected = BAD_INPUTS[case]
    (tmp_path / "plugs" / "broken").mkdir(parents=True)
    (tmp_path / "plugs" / "broken" / "plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    config = write_yaml(tmp_path, text)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("--config", str(config), *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "wf.yaml" in result.stderr or "--set" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_success_run_then_rerun_is_refused_then_overwrite(tmp_path):
    config = write_yaml(tmp_path, GOOD)
    first = cli("--config", str(config), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["summary"] == {"count": 3, "total": 3}
    assert not (tmp_path / "out" / "run.lock").exists()
    again = cli("--config", str(config), cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "success"  # untouched
    assert cli("--config", str(config), "--overwrite", cwd=tmp_path).returncode == 0


def test_output_flag_and_named_flags_and_set(tmp_path):
    config = write_yaml(tmp_path, GOOD)
    result = cli("--config", str(config), "--output", "elsewhere", "--set", "writer.count=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "elsewhere" / "run.json").read_text())["summary"]["total"] == 10


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    config = write_yaml(tmp_path, GOOD)
    result = cli("--config", str(config), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0 and "sample_plugins.Writer" in result.stdout and "count=3" in result.stdout
    assert not (tmp_path / "out").exists()


def test_plugin_failure_exits_1_without_traceback_unless_debug(tmp_path):
    config = write_yaml(tmp_path, "workflow:\n  DO:\n    - plugin: sample_plugins.Failer\n")
    result = cli("--config", str(config), "--output", "r1", cwd=tmp_path)
    assert result.returncode == 1 and "boom" in result.stderr and "Traceback" not in result.stderr
    debug = cli("--config", str(config), "--output", "r2", "--debug", cwd=tmp_path)
    assert debug.returncode == 1


def test_review_failure_exits_3(tmp_path):
    config = write_yaml(
        tmp_path, "workflow:\n  REVIEW:\n    - plugin: sample_plugins.Failer\n      config: {kind: review}\n"
    )
    result = cli("--config", str(config), "--output", "r", cwd=tmp_path)
    assert result.returncode == 3 and "perplexity_max" in result.stderr


def test_resume_without_a_run_is_refused(tmp_path):
    config = write_yaml(tmp_path, GOOD)
    result = cli("--config", str(config), "--resume", cwd=tmp_path)
    assert result.returncode == 2 and "no run to resume" in result.stderr


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_then_exits_and_resume_completes(tmp_path, signum, code):
    config = write_yaml(
        tmp_path,
        "run: {output_dir: out}\nworkflow:\n  input:\n    - plugin: sample_plugins.Writer\n  DO:\n    - plugin: sample_plugins.Sleeper\n      config: {steps: 400}\n",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while not (tmp_path / "out" / "memory.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "interrupted"
    resumed = cli("--config", str(config), "--resume", "--set", "sleeper.steps=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    stages = json.loads((tmp_path / "out" / "run.json").read_text())["stages"]
    assert [(s["stage"], s["status"]) for s in stages] == [("INPUT", "skipped"), ("DO", "success")]


def test_a_live_lock_refuses_a_second_run(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.lock").write_text(json.dumps({"pid": os.getpid()}))
    config = write_yaml(tmp_path, GOOD)
    result = cli("--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and f"pid {os.getpid()}" in result.stderr


def test_validate_and_list_plugins(tmp_path):
    config = write_yaml(tmp_path, GOOD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    validate = subprocess.run(
        [sys.executable, "-m", "entity_training.cli", "validate", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert validate.returncode == 0 and "valid" in validate.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "entity_training.cli", "list-plugins"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert listing.returncode == 0 and "dataset_loader" in listing.stdout


@pytest.mark.parametrize(
    ("imports", "heavy"),
    [
        ("entity_training, entity_training.cli, entity_training.workflow, entity_training.executor", ML_LIBRARIES),
        # The package's public names are lazy: a bare import (each command's start) skips pydantic too.
        ("entity_training", (*ML_LIBRARIES, "pydantic")),
    ],
)
def test_importing_the_engine_does_not_import_ml_libraries(imports, heavy):
    code = f"import sys, {imports}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


def test_secrets_never_reach_any_output(tmp_path):
    token = "hf_FAKEtoken1234567890abcdef"
    config = write_yaml(tmp_path, "run: {output_dir: out}\nworkflow:\n  input:\n    - plugin: sample_plugins.Leaker\n")
    result = cli("--config", str(config), cwd=tmp_path, env={"HF_TOKEN": token})
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    written = list((tmp_path / "out").rglob("*"))
    assert {p.name for p in written} >= {"run.json", "memory.json", "events.jsonl"}
    for path in written:
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path
    assert "***" in (tmp_path / "out" / "run.json").read_text()
