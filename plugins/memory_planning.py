"""MemoryPlanPlugin (THINK): the training's peak-memory plan, before any weight is loaded.

Features:
- estimates the peak memory of the resolved training configuration at the sequence length of the
  prepared data (plugins/training/memory_plan.py), against ``memory_budget_gb`` or the device's
  free memory;
- with ``auto_fit`` (training_config), when the estimate does not fit: enables gradient
  checkpointing, then halves the micro-batch and doubles accumulation, and says what it changed;
- stores the plan, with the settings to train with, in ``training.memory_plan`` for FineTuning.

Raises:
    InputError: the model's config cannot be read.
"""

from __future__ import annotations

import asyncio

from entity_training import Plugin, Stage
from plugins import memory_keys


class MemoryPlanPlugin(Plugin):
    name = "memory_plan"
    description = "Estimate the training's peak memory and fit batch size, accumulation and checkpointing to it."
    supported_stages = (Stage.THINK,)
    dependencies = (memory_keys.TRAINING_CONFIG, memory_keys.DATASET_TOKENIZED)
    provides = (memory_keys.TRAINING_MEMORY_PLAN,)

    async def _execute_impl(self, context) -> str:
        from plugins.training.memory_plan import format_bytes, plan_for_config

        config = context.recall(memory_keys.TRAINING_CONFIG)
        max_seq_length = context.recall(memory_keys.DATASET_TOKENIZED)["max_seq_length"]
        plan = await asyncio.to_thread(plan_for_config, config, max_seq_length)
        context.remember(memory_keys.TRAINING_MEMORY_PLAN, plan)
        context.log(
            f"memory plan: estimated peak {format_bytes(plan.peak_bytes)} of {format_bytes(plan.available_bytes)} "
            f"available ({plan.device_name})"
        )
        for change in plan.changes:
            context.warn(f"memory plan auto-fit: {change}")
        if not plan.fits:
            context.warn(
                f"the estimated peak ({format_bytes(plan.peak_bytes)}) exceeds the memory available; training "
                "may run out of memory. Lower max_seq_length or batch_size, or use qlora or a smaller model."
            )
        settings = plan.settings
        return (
            f"estimated peak {format_bytes(plan.peak_bytes)}; batch {settings.batch_size}x"
            f"{settings.gradient_accumulation_steps}, gradient checkpointing "
            f"{'on' if settings.gradient_checkpointing else 'off'}"
        )
