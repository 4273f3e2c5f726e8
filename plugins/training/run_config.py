"""The settings every training plugin (fine_tuning, preference_training) shares: how a run copes
with running out of memory and how many CPU threads it uses. Light: no torch here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from entity_training import PluginConfig

MAX_OOM_RETRIES = 2


class TrainingRunConfig(PluginConfig):
    oom_retries: int = Field(
        MAX_OOM_RETRIES,
        ge=0,
        le=MAX_OOM_RETRIES,
        description="On out-of-memory, retry this many times with half the micro-batch and twice the accumulation.",
    )
    torch_threads: PositiveInt | Literal["auto"] | None = Field(
        "auto",
        description=(
            "CPU threads for the maths. auto: the physical cores that other work leaves idle (CPU use sampled "
            "while training starts up, and logged), because threads waiting for a busy core spin and slow every "
            "step; an integer: exactly that many; null: torch's default (every physical core)."
        ),
    )
