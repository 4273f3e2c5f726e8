"""MemoryPlanPlugin (THINK): the plan is made before DO, persisted for --resume, and required by
fine_tuning at load time."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.training import build_tiny_model_dir, plan_memory, resolved_training_config

from entity_training import ConfigError, Stage
from entity_training.memory import Memory
from entity_training.workflow import load_workflow
from plugins import memory_keys
from plugins.training.memory_plan import GIB, MIB, MemoryPlan

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("model")))


def memory_for(model: str, **settings) -> Memory:
    memory = Memory()
    memory.set(memory_keys.TRAINING_CONFIG, resolved_training_config(model_name_or_path=model, **settings))
    memory.set(memory_keys.DATASET_TOKENIZED, {"max_seq_length": 512})
    return memory


async def test_the_plan_uses_the_prepared_sequence_length_and_auto_fits(tiny_model, tmp_path):
    memory = memory_for(tiny_model, batch_size=16, memory_budget_gb=60 * MIB / GIB)
    events: list = []
    await plan_memory(tmp_path, memory, events=events)
    plan = memory.get(memory_keys.TRAINING_MEMORY_PLAN)
    assert isinstance(plan, MemoryPlan) and plan.settings.max_seq_length == 512
    assert plan.changes and plan.settings.batch_size < 16
    assert plan.settings.batch_size * plan.settings.gradient_accumulation_steps == 16
    assert any("memory plan auto-fit" in e["message"] for e in events if e["type"] == "warning")


async def test_the_plan_is_restored_on_resume(tiny_model, tmp_path):
    memory = memory_for(tiny_model)
    await plan_memory(tmp_path, memory)
    memory.mark_stage_done(Stage.THINK.value)
    memory.save(tmp_path)
    restored = Memory.load(tmp_path)
    assert restored.get(memory_keys.TRAINING_MEMORY_PLAN) == memory.get(memory_keys.TRAINING_MEMORY_PLAN)
    assert restored.get(memory_keys.TRAINING_CONFIG) == memory.get(memory_keys.TRAINING_CONFIG)


def test_a_workflow_that_trains_without_a_plan_is_refused_at_load_with_the_fix(tmp_path):
    text = (REPO / "configs" / "lora_training.yaml").read_text()
    workflow = tmp_path / "no_plan.yaml"
    workflow.write_text(text.replace("    - plugin: memory_plan\n", ""))
    with pytest.raises(ConfigError) as caught:
        load_workflow(workflow)
    message = str(caught.value)
    assert "'fine_tuning' needs 'training.memory_plan'" in message
    assert "add `- plugin: memory_plan` to THINK" in message


def test_every_workflow_that_trains_plans_its_memory_first():
    files = [*REPO.glob("configs/*.yaml"), *REPO.glob("examples/**/*.yaml"), *REPO.glob("tests/**/*.yaml")]
    for path in files:
        text = path.read_text()
        if "plugin: fine_tuning" in text and "plugin: data_preparation" in text:
            assert text.index("plugin: data_preparation") < text.index("plugin: memory_plan"), path
