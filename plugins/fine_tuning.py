"""FineTuningPlugin (DO): train the model on the packed rows of the data preparation stage.

Features:
- full, LoRA, DoRA and QLoRA training with the transformers Trainer on padding-free packed
  rows (block-diagonal attention), with the batch size, accumulation and gradient checkpointing
  of the memory plan (``training.memory_plan``, made in THINK by the memory_plan plugin);
- from training_config's model, or, when ``model_name_or_path`` is a PEFT adapter folder, that
  adapter continued (as saved) on its base model (plugins/training/starting_model.py);
- metrics to the engine (loss, learning rate, grad norm, tokens/s, memory, ETA), to
  ``metrics.jsonl``/``metrics.csv`` and optionally TensorBoard;
- with a streamed dataset (``dataset.tokenized["stream"]``), rows read, tokenized and packed as
  training goes (plugins/training/stream_rows.py), their position saved in every checkpoint;
- atomic, verified checkpoints in ``checkpoints/``; resume from the newest complete one
  (``resume_from_checkpoint: auto`` or ``--resume``), skipping corrupt ones;
- Ctrl-C saves a checkpoint, then stops with RunInterrupted (exit code 130);
- on out-of-memory: halve the micro-batch, double accumulation, retry from the last checkpoint;
- the final model (adapter or full weights, tokenizer with the training chat template) in
  ``final-model/``; only the main process writes files in a distributed run.

Raises:
    ConfigError: an explicit resume_from_checkpoint that is not a complete checkpoint.
    InputError: preference or KTO data (``dataset.tokenized["task"]`` is not sft), before the model loads.
    RunInterrupted: the user pressed Ctrl-C (a checkpoint was saved first).
    PluginError: out of memory even after the retries, or a missing input from earlier stages.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from entity_training import InputError, Plugin, Problem, Stage
from plugins import memory_keys
from plugins.training.run_config import TrainingRunConfig

if TYPE_CHECKING:
    from plugins.training.memory_plan import TrainingShape
    from plugins.training_config import ResolvedTrainingConfig


class FineTuningConfig(TrainingRunConfig):
    """The settings of a supervised fine-tuning run (the hyper-parameters are training_config's)."""


class FineTuningPlugin(Plugin):
    name = "fine_tuning"
    description = "Train the model (full, LoRA, DoRA or QLoRA) on the tokenized data, with checkpoints."
    supported_stages = (Stage.DO,)
    dependencies = (memory_keys.TRAINING_CONFIG, memory_keys.DATASET_TOKENIZED, memory_keys.TRAINING_MEMORY_PLAN)
    optional_dependencies = (memory_keys.DATASET_STATS,)  # names the data files when refusing preference data
    provides = (memory_keys.TRAINING_RESULT,)

    ConfigModel = FineTuningConfig

    async def _execute_impl(self, context) -> str:
        from plugins.training.session import require_inputs, train_in_worker

        config = context.recall(memory_keys.TRAINING_CONFIG)
        tokenized = context.recall(memory_keys.DATASET_TOKENIZED)
        plan = context.recall(memory_keys.TRAINING_MEMORY_PLAN)
        require_inputs(context, self.plugin_name(), config=config, tokenized=tokenized, plan=plan)
        self._refuse_preference_data(context, tokenized)
        train_once = partial(self._train_once, context, config, tokenized)
        result = await train_in_worker(
            context, config, plan.settings, train_once, run_config=self.config, plugin_name=self.plugin_name()
        )
        context.remember(memory_keys.TRAINING_RESULT, result)
        context.summarize("train_loss", result["train_loss"])
        context.summarize("final_eval_loss", result["final_eval_loss"])
        eval_part = ""
        if result["final_eval_loss"] is not None:
            eval_part = f", validation loss {result['final_eval_loss']:.4f} (final model"
            # The final model is the last step's weights, not the lowest-loss checkpoint's.
            if result["best_eval_step"] != result["steps"]:
                context.summarize("best_eval_loss", result["best_eval_loss"])
                context.summarize("best_eval_step", result["best_eval_step"])
                eval_part += f"; lowest {result['best_eval_loss']:.4f} at step {result['best_eval_step']}"
            eval_part += ")"
        context.summarize("final_model_path", result["final_model_path"])
        return (
            f"{result['steps']} steps, train loss {result['train_loss']:.4f}{eval_part}, "
            f"{result['tokens_per_second']:.0f} tokens/s"
        )

    @staticmethod
    def _refuse_preference_data(context, tokenized: dict[str, Any]) -> None:
        """Supervised fine-tuning trains on SFT data only; preference pairs and KTO rows go to preference_training."""
        task = tokenized.get("task", "sft")
        if task == "sft":
            return
        stats = context.recall(memory_keys.DATASET_STATS) or {}
        files = ", ".join(stats.get("files") or ()) or tokenized["train"]
        raise InputError(
            Problem(
                f"the dataset is {task} data ({'chosen/rejected pairs' if task == 'preference' else 'KTO rows'}), "
                "which fine_tuning (supervised fine-tuning) cannot train on. Use the preference training plugin "
                "(preference_training) in DO instead, or give fine_tuning SFT data.",
                file=files,
            )
        )

    async def cleanup(self, context) -> None:
        from plugins.training.resources import release_memory

        release_memory()

    # -- training -----------------------------------------------------------------------------
    def _train_once(
        self, context, config: ResolvedTrainingConfig, tokenized, settings: TrainingShape, resume: str | None
    ) -> dict[str, Any]:
        from plugins.training.session import loaded_for_training, run_trainer

        with loaded_for_training(context, config, settings, self.config, tokenized) as loaded:
            from plugins.data.collator import PackedCollator
            from plugins.training.trainer import PackedRows, PackedTrainer

            train_rows = self._train_rows(tokenized, loaded.tokenizer, settings)
            result = run_trainer(
                PackedTrainer,
                context=context,
                config=config,
                settings=settings,
                resume=resume,
                loaded=loaded,
                train_rows=train_rows,
                eval_rows=PackedRows(tokenized["validation"]) if tokenized.get("validation") else None,
                data_collator=PackedCollator(pad_token_id=loaded.tokenizer.pad_token_id),
            )
        if tokenized.get("stream"):
            result["stream"] = train_rows.statistics()
            context.log(_describe_stream(result["stream"]))
        return result

    @staticmethod
    def _train_rows(tokenized: dict[str, Any], tokenizer, settings: TrainingShape):
        """The tokenized rows on disk, or with streaming the rows read from the files as training goes."""
        if not tokenized.get("stream"):
            from plugins.training.trainer import PackedRows

            return PackedRows(tokenized["train"])
        from plugins.training.stream_rows import StreamingRows

        # The loader reads at most a micro-batch or two ahead of training; keep room for more.
        return StreamingRows(tokenized, tokenizer, lookback=max(256, 4 * settings.batch_size))


def _describe_stream(stats: dict[str, Any]) -> str:
    bad = sum(source["bad_rows"] for source in stats["sources"].values())
    return (
        f"stream: {stats['samples']:,} samples read into {stats['rows_yielded']:,} rows, {stats['truncated']} cut "
        f"at max_seq_length, {stats['dropped_too_long'] + stats['dropped_untrained']} dropped, {bad} bad rows skipped"
    )
