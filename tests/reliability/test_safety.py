"""Safety: no pickle unless allowed, no remote code unless asked (and shown in red), no secret in
any output file, YAML that cannot construct objects, ``${VAR}`` that never executes anything."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import run_train
from helpers.training import build_tiny_model_dir
from helpers.workflows import step, write_workflow, write_yaml
from rich.console import Console

from entity_training import ConfigError, InputError
from entity_training.workflow import load_workflow

REPO = Path(__file__).resolve().parents[2]


# -- pickle -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny model twice: as safetensors (the reference) and with only a pickle checkpoint."""
    import shutil

    import torch
    from safetensors.torch import load_file

    safe = build_tiny_model_dir(tmp_path_factory.mktemp("safe"))
    pickled = tmp_path_factory.mktemp("pickled")
    for item in safe.iterdir():
        if item.suffix != ".safetensors" and item.is_file():
            shutil.copy(item, pickled / item.name)
    torch.save(load_file(safe / "model.safetensors"), pickled / "pytorch_model.bin")
    return safe, pickled


@pytest.mark.parametrize("target", ["folder", "file"])
def test_pickle_weights_are_refused_unless_allowed(pickled_model, target):
    import torch

    from plugins.models.loaders import load_causal_lm

    safe, pickled = pickled_model
    path = pickled if target == "folder" else pickled / "pytorch_model.bin"
    with pytest.raises(InputError) as refused:
        load_causal_lm(path)
    message = str(refused.value)
    assert "allow_pickle" in message and "safetensors" in message and str(path) in message

    torch.manual_seed(0)
    ids = torch.randint(0, 200, (1, 12))
    allowed = load_causal_lm(path, allow_pickle=True, dtype=torch.float32)
    reference = load_causal_lm(safe, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(allowed(ids).logits, reference(ids).logits)


# -- remote code --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "warning"),
    [
        ("trust_remote_code", "trust_remote_code=true: the model's own Python code will run"),
        ("allow_pickle", "allow_pickle=true: pickle weights will be unpickled"),
    ],
)
def test_settings_that_run_model_code_are_off_by_default_and_red_in_the_plan(tmp_path, monkeypatch, key, warning):
    from entity_training import commands
    from plugins.data_preparation import DataPreparationPlugin
    from plugins.training_config import TrainingConfigPlugin

    assert TrainingConfigPlugin.ConfigModel.model_fields[key].default is False
    workflow = load_workflow(write_workflow(tmp_path, training={key: True}, stop_after="PARSE"))
    buffer = io.StringIO()
    monkeypatch.setattr(
        commands, "console", Console(file=buffer, force_terminal=True, color_system="standard", width=300)
    )
    commands.print_plan(workflow, None)
    rendered = buffer.getvalue()
    assert warning in rendered
    red = "\x1b[1;31m"  # bold red
    assert rendered.rfind(red, 0, rendered.index(warning)) != -1

    buffer.truncate(0)
    commands.print_plan(load_workflow(write_workflow(tmp_path, training={key: False}, stop_after="PARSE")), None)
    assert warning not in buffer.getvalue()
    assert key not in DataPreparationPlugin.ConfigModel.model_fields  # it follows training_config


def test_a_pickle_only_model_is_refused_by_the_cli_until_allow_pickle_is_set(pickled_model, tmp_path):
    _, pickled = pickled_model
    write_workflow(
        tmp_path,
        run={"name": "pickle", "output_dir": "run", "seed": 1},
        dataset={"validation_split": 0.0, "max_samples": 8},
        training={"model_name_or_path": pickled, "max_steps": 2, "batch_size": 2, "save_steps": None},
        preparation={"max_seq_length": 64, "chat_template": "chatml"},
    )
    refused = run_train("--config", "wf.yaml", "--yes", cwd=tmp_path)
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "allow_pickle: true" in message and str(pickled) in message
    assert "Traceback" not in refused.stdout + refused.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused in PARSE, before any training

    allowed = run_train(
        "--config", "wf.yaml", "--yes", "--overwrite", "--set", "training_config.allow_pickle=true", cwd=tmp_path
    )
    assert allowed.returncode == 0, allowed.stdout[-2000:] + allowed.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "memory.json").read_text())["entries"]["training.result"]
    assert result["steps"] == 2


# -- YAML and ${VAR} ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
        "!!python/name:os.system",
    ],
)
def test_yaml_tags_cannot_construct_objects(tmp_path, tag):
    marker = tmp_path / "executed"
    value = tag.format(marker=marker)
    path = write_yaml(tmp_path, f"run:\n  name: {value}\nworkflow:\n  INPUT:\n    - plugin: dataset_loader\n")
    with pytest.raises(ConfigError) as caught:
        load_workflow(path)
    assert "wf.yaml" in caught.value.render()
    assert not marker.exists()


def test_variables_are_substituted_as_plain_text_never_run(tmp_path):
    marker = tmp_path / "executed"
    env = {
        "SHELL_SUBST": f"$(touch {marker})",
        "BACKTICKS": f"`touch {marker}`",
        "NESTED": "${SHELL_SUBST}",
        "PYTHON": "__import__('os').system('touch " + str(marker) + "')",
    }
    path = write_workflow(
        tmp_path, run={"name": "${SHELL_SUBST}|${BACKTICKS}|${NESTED}|${PYTHON}|$${LITERAL}"}, stop_after="INPUT"
    )
    workflow = load_workflow(path, env=env)
    expected = "|".join([env["SHELL_SUBST"], env["BACKTICKS"], "${SHELL_SUBST}", env["PYTHON"], "${LITERAL}"])
    assert workflow.run.name == expected
    assert not marker.exists()


def test_plugins_load_only_from_named_places(tmp_path):
    """A plugin file beside the workflow is not imported unless plugin_dirs names its folder."""
    marker = tmp_path / "imported"
    (tmp_path / "sneaky").mkdir()
    (tmp_path / "sneaky" / "plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    path = write_workflow(tmp_path, stages={"INPUT": [step("sneaky")]})
    with pytest.raises(ConfigError, match="unknown plugin 'sneaky'"):
        load_workflow(path)
    assert not marker.exists()


# -- secrets ------------------------------------------------------------------------------------

FAKE_HF_TOKEN = "hf_FakeTokenForLeakTest0123456789"
FAKE_API_KEY = "sk-fake-api-key-for-leak-test-987654"


@pytest.mark.slow
def test_secrets_never_reach_an_output_file_or_the_console(tmp_path):
    write_workflow(
        tmp_path,
        run={"name": "leak-${FOO_API_KEY}", "output_dir": "run", "seed": 1},
        dataset={"validation_split": 0.1},
        training={"max_steps": 2, "batch_size": 2, "save_steps": 1},
        preparation={"max_seq_length": 256},
        output=[step("model_export", export_formats=["huggingface"], verify_prompts=1), step("run_report")],
    )
    env = {**os.environ, "HF_TOKEN": FAKE_HF_TOKEN, "FOO_API_KEY": FAKE_API_KEY}
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", "wf.yaml", "--yes"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files) and any(p.name == "README.md" for p in files)
    for secret in (FAKE_HF_TOKEN, FAKE_API_KEY):
        assert secret not in result.stdout + result.stderr
        leaks = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaks, f"{secret[:6]}... found in {leaks}"
