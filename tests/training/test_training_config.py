"""TrainingConfigPlugin (PARSE): resolution, cross-field checks, and the bad input that must get
a clear message and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import run_train
from helpers.training import build_tiny_model_dir
from pydantic import ValidationError

from entity_training import ConfigError, InputError, Stage
from entity_training.memory import Memory
from entity_training.testing import make_context
from plugins import memory_keys
from plugins.training.device import DeviceInfo
from plugins.training_config import ResolvedTrainingConfig, TrainingConfig, TrainingConfigPlugin


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("model")))


def resolve(**settings):
    return TrainingConfigPlugin(settings).resolve(seed=7, log=lambda message: None)


def cpu(bf16: bool) -> DeviceInfo:
    return DeviceInfo(
        "cpu", "test CPU", supports_bf16=bf16, supports_fp16=False, total_memory_bytes=2**34, free_memory_bytes=2**33
    )


@pytest.mark.parametrize("model", [TrainingConfig, ResolvedTrainingConfig])
def test_every_field_is_described(model):
    undocumented = [name for name, field in model.model_fields.items() if not field.description]
    assert undocumented == []


def test_cli_flag_fields_exist_under_their_agreed_names():
    agreed = {"model_name_or_path", "training_method", "num_epochs", "batch_size", "learning_rate", "lora_r"}
    agreed |= {"lora_alpha", "warmup_steps", "evaluation_steps", "save_steps", "max_steps"}
    assert agreed <= set(TrainingConfig.model_fields)


async def test_execute_stores_the_resolved_config(tiny_model, tmp_path):
    memory = Memory()
    plugin = TrainingConfigPlugin({"model_name_or_path": tiny_model, "learning_rate": 1e-3})
    summary = await plugin.execute(make_context(Stage.PARSE, tmp_path, memory))
    config = memory.get(memory_keys.TRAINING_CONFIG)
    assert "lora" in summary
    assert isinstance(config, ResolvedTrainingConfig)
    assert config.learning_rate == 1e-3 and config.training_method == "lora"
    assert config.precision in ("fp32", "bf16", "fp16")
    assert config.seed == 42  # the run's seed when the block sets none
    assert config.total_params > 0
    json.dumps(config.model_dump(mode="json"))  # persisted for --resume


def test_parse_and_plan_on_a_builtin_model_build_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(cache))
    assert resolve(model_name_or_path="small").total_params > 10_000_000
    done = run_train("plan", str(CONFIGS / "lora_training.yaml"), "--model", "small", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "estimated peak" in done.stdout
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())


def test_auto_precision_is_fp32_on_a_cpu_without_bf16(tiny_model, monkeypatch):
    monkeypatch.setattr("plugins.training.device.detect_device", lambda: cpu(bf16=False))
    assert resolve(model_name_or_path=tiny_model).precision == "fp32"
    monkeypatch.setattr("plugins.training.device.detect_device", lambda: cpu(bf16=True))
    assert resolve(model_name_or_path=tiny_model).precision == "bf16"


def test_bf16_on_a_cpu_without_it_is_refused_with_the_alternative(tiny_model, monkeypatch):
    monkeypatch.setattr("plugins.training.device.detect_device", lambda: cpu(bf16=False))
    with pytest.raises(ConfigError, match="precision: fp32") as caught:
        resolve(model_name_or_path=tiny_model, precision="bf16")
    assert caught.value.exit_code == 2


def test_qlora_turns_on_4bit_loading_and_says_so(tiny_model):
    pytest.importorskip("bitsandbytes")
    messages = []
    config = TrainingConfigPlugin({"model_name_or_path": tiny_model, "training_method": "qlora"}).resolve(
        seed=0, log=messages.append
    )
    assert config.load_in_4bit is True
    assert any("load_in_4bit" in message for message in messages)


def test_qlora_without_bitsandbytes_is_a_config_error(tiny_model, monkeypatch):
    monkeypatch.setattr("plugins.training_config._has_bitsandbytes", lambda: False)
    with pytest.raises(ConfigError, match="pip install bitsandbytes") as caught:
        resolve(model_name_or_path=tiny_model, training_method="qlora")
    assert caught.value.exit_code == 2


def test_full_fine_tuning_of_a_4bit_base_is_refused():
    with pytest.raises(ValidationError, match="full fine-tuning cannot train a 4-bit base"):
        TrainingConfigPlugin({"training_method": "full", "load_in_4bit": True})


@pytest.mark.parametrize(
    "settings",
    [{"learning_rate": 0}, {"learning_rate": -1e-4}, {"batch_size": 0}, {"warmup_steps": 10, "warmup_ratio": 0.1}],
)
def test_impossible_values_are_refused_when_the_workflow_loads(settings):
    with pytest.raises(ValidationError):
        TrainingConfigPlugin(settings)


def test_target_modules_that_match_nothing_are_named(tiny_model):
    with pytest.raises(ConfigError) as caught:
        resolve(model_name_or_path=tiny_model, target_modules=["q_proj", "query_key_value"])
    message = str(caught.value)
    assert "query_key_value" in message and "'q_proj'" not in message.split("match")[0]
    assert "gate_proj" in message  # the names that do exist are listed
    assert caught.value.exit_code == 2


def test_target_modules_are_not_checked_for_full_training(tiny_model):
    assert resolve(model_name_or_path=tiny_model, training_method="full", target_modules=["nothing"])


def test_unknown_model_is_an_input_error():
    with pytest.raises(InputError) as caught:
        resolve(model_name_or_path="no-such-model-anywhere")
    assert caught.value.exit_code == 2


def test_an_architecture_that_is_not_a_causal_lm_is_refused(tmp_path):
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError) as caught:
        resolve(model_name_or_path=str(folder))
    assert caught.value.exit_code == 2


def test_resume_path_that_does_not_exist_is_refused(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(model_name_or_path=tiny_model, resume_from_checkpoint=str(tmp_path / "missing"))
    assert resolve(model_name_or_path=tiny_model, resume_from_checkpoint="auto").resume_from_checkpoint == "auto"


EXAMPLE_WORKFLOWS = [
    "default",
    "lora_training",
    "qlora_training",
    "full_training",
    "continued_training",
    "dpo",
    "streaming",
]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", EXAMPLE_WORKFLOWS)
def test_example_workflow_validates_with_the_tiny_model(name, capsys):
    from entity_training.cli import main

    code = main(["validate", str(CONFIGS / f"{name}.yaml"), "--set", "training_config.model_name_or_path=tiny"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("name", EXAMPLE_WORKFLOWS)
def test_example_workflow_opens_with_its_run_command_and_an_override(name):
    head = (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8").split("\n\n")[0]
    commands = [line for line in head.splitlines() if "train.py --config configs/" in line]
    assert len(commands) >= 2, "the run command and one override example"


def test_fsdp_layer_classes_are_checked_against_the_model(tiny_model, monkeypatch):
    # What `accelerate launch` with an FSDP config passes to each process.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer")
    assert resolve(model_name_or_path=tiny_model).model_name_or_path == tiny_model
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer,Qwen2DecoderLayer")
    with pytest.raises(ConfigError) as raised:
        resolve(model_name_or_path=tiny_model)
    problem = raised.value.problems[0]
    assert problem.path == "fsdp_transformer_layer_cls_to_wrap"
    assert "wraps Qwen2DecoderLayer" in problem.message and "classes are: LlamaDecoderLayer" in problem.message
    monkeypatch.setenv("FSDP_AUTO_WRAP_POLICY", "NO_WRAP")  # the classes are read only to wrap by class
    assert resolve(model_name_or_path=tiny_model).total_params > 0
