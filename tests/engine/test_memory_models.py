"""Memory persists pydantic models (frozen values read as attributes) across --resume."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from entity_training.memory import MEMORY_FILE, Memory


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(description="A name.")
    rate: float = Field(gt=0, description="A rate.")
    layers: list[str] = Field(default_factory=list, description="Layer names.")


def test_a_frozen_model_round_trips_through_save_and_load(tmp_path):
    memory = Memory()
    memory.set("settings", Settings(name="small", rate=2e-4, layers=["q_proj"]), stage="parse")
    memory.mark_stage_done("parse")
    memory.save(tmp_path)

    restored = Memory.load(tmp_path)

    assert restored.get("settings") == Settings(name="small", rate=2e-4, layers=["q_proj"])
    assert isinstance(restored.get("settings"), Settings)
    assert restored.completed_stages == ["parse"]


def test_a_model_whose_class_is_gone_is_not_restored_and_its_stage_runs_again(tmp_path):
    memory = Memory()
    memory.set("settings", Settings(name="small", rate=1.0), stage="parse")
    memory.set("plain", {"rows": 3}, stage="input")
    memory.mark_stage_done("input")
    memory.mark_stage_done("parse")
    memory.save(tmp_path)
    data = json.loads((tmp_path / MEMORY_FILE).read_text())
    data["models"]["settings"] = "no_such_module_anywhere:Settings"
    (tmp_path / MEMORY_FILE).write_text(json.dumps(data))

    restored = Memory.load(tmp_path)

    assert not restored.has("settings")
    assert restored.get("plain") == {"rows": 3}
    assert restored.completed_stages == ["input"]
