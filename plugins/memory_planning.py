"""MemoryPlanPlugin (THINK): the training's peak-memory plan, before any weight is loaded.

Features:
- estimates the peak memory of the resolved training configuration at the sequence length of the
  prepared data (plugins/training/memory_plan.py), against ``memory_budget_gb`` or the device's
  free memory; under a distributed launch, one rank's peak for the strategy the launch selected
  (DDP, ZeRO 1/2/3 or FSDP2 full shard, shard-grad-op or offload, read from the variables
  ``accelerate launch`` sets) over ``WORLD_SIZE`` ranks (plugins/training/rank_memory_plan.py);
- with ``auto_fit`` (training_config), when the estimate does not fit: enables gradient
  checkpointing, then halves the micro-batch and doubles accumulation, and says what it changed;
- preference data (``dataset.tokenized["task"]``): counts the sequences of each example (a pair's
  two), padded to the data's longest (read from the tokenized files), and the reference model the
  preference_training step's ``loss`` and ``precompute_ref_logps`` call for (read at load, by
  ``check_workflow``; that step's defaults when the workflow has none);
- stores the plan, with the settings to train with, in ``training.memory_plan`` for FineTuning and
  PreferenceTraining.

Raises:
    InputError: the model's config cannot be read.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from entity_training import Finding, Plugin, Stage
from plugins import memory_keys

if TYPE_CHECKING:
    from plugins.training.memory_plan import PreferenceRun


class MemoryPlanPlugin(Plugin):
    name = "memory_plan"
    description = "Estimate the training's peak memory and fit batch size, accumulation and checkpointing to it."
    supported_stages = (Stage.THINK,)
    dependencies = (memory_keys.TRAINING_CONFIG, memory_keys.DATASET_TOKENIZED)
    provides = (memory_keys.TRAINING_MEMORY_PLAN,)

    # The workflow's plugins, seen at load: the preference_training step's settings are read at run time.
    _workflow_plugins: tuple[Any, ...] = ()

    def check_workflow(self, plugins) -> list[Finding]:
        self._workflow_plugins = tuple(plugins)
        return []

    async def _execute_impl(self, context) -> str:
        from plugins.training.device import distributed_launch
        from plugins.training.memory_plan import format_bytes, plan_for_config
        from plugins.training.rank_memory_plan import launched_rank_estimator

        config = context.recall(memory_keys.TRAINING_CONFIG)
        tokenized = context.recall(memory_keys.DATASET_TOKENIZED)
        preference = await asyncio.to_thread(self._preference_run, tokenized)
        # Under torchrun / accelerate launch each rank plans its own share of the launched strategy.
        rank_estimate = launched_rank_estimator(os.environ) if distributed_launch() else None
        plan = await asyncio.to_thread(
            plan_for_config, config, tokenized["max_seq_length"], preference=preference, rank_estimate=rank_estimate
        )
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

    def _preference_run(self, tokenized: dict[str, Any]) -> PreferenceRun | None:
        """The preference training to plan for, with the longest sequence and answer of its data."""
        from plugins.training.memory_plan import preference_run_of

        task = tokenized.get("task") or "sft"
        run = preference_run_of(list(self._workflow_plugins), task)
        if run is None or task == "sft" or not tokenized.get("train"):
            return run
        from plugins.data.preference_tokenized import load_preference_split

        sequence, answer = load_preference_split(tokenized["train"]).longest()
        return run.model_copy(update={"longest_sequence": sequence or None, "longest_answer": answer or None})
