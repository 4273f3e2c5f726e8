"""FineTuningPlugin (DO): train the model on the packed rows of the data preparation stage.

Features:
- full, LoRA, DoRA and QLoRA training with the transformers Trainer on padding-free packed
  rows (block-diagonal attention), with the batch size, accumulation and gradient checkpointing
  of the memory plan (``training.memory_plan``, made in THINK by the memory_plan plugin);
- metrics to the engine (loss, learning rate, grad norm, tokens/s, memory, ETA), to
  ``metrics.jsonl``/``metrics.csv`` and optionally TensorBoard;
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

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt

from entity_training import ConfigError, InputError, Plugin, PluginConfig, PluginError, Problem, RunInterrupted, Stage
from plugins import memory_keys

if TYPE_CHECKING:
    from plugins.training.memory_plan import TrainingShape
    from plugins.training_config import ResolvedTrainingConfig

CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL_DIR = "final-model"
MAX_OOM_RETRIES = 2


class FineTuningConfig(PluginConfig):
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


class FineTuningPlugin(Plugin):
    name = "fine_tuning"
    description = "Train the model (full, LoRA, DoRA or QLoRA) on the tokenized data, with checkpoints."
    supported_stages = (Stage.DO,)
    dependencies = (memory_keys.TRAINING_CONFIG, memory_keys.DATASET_TOKENIZED, memory_keys.TRAINING_MEMORY_PLAN)
    optional_dependencies = (memory_keys.DATASET_STATS,)  # names the data files when refusing preference data
    provides = (memory_keys.TRAINING_RESULT,)

    ConfigModel = FineTuningConfig

    async def _execute_impl(self, context) -> str:
        config = context.recall(memory_keys.TRAINING_CONFIG)
        tokenized = context.recall(memory_keys.DATASET_TOKENIZED)
        plan = context.recall(memory_keys.TRAINING_MEMORY_PLAN)
        if config is None or tokenized is None or plan is None:
            raise PluginError(
                "needs training.config (training_config in PARSE), dataset.tokenized (data_preparation in THINK) "
                "and training.memory_plan (memory_plan in THINK)",
                plugin=self.plugin_name(),
                stage=context.stage.value,
            )
        self._refuse_preference_data(context, tokenized)
        result = await asyncio.to_thread(self._train_with_retries, context, config, tokenized, plan.settings)
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
    def _train_with_retries(
        self, context, config: ResolvedTrainingConfig, tokenized, settings: TrainingShape
    ) -> dict[str, Any]:
        from plugins.training.checkpoints import newest_complete_checkpoint
        from plugins.training.resources import is_out_of_memory, release_memory

        checkpoint_dir = Path(context.run_dir) / CHECKPOINT_DIR
        resume = self._resume_checkpoint(context, config, checkpoint_dir)
        for attempt in range(self.config.oom_retries + 1):
            try:
                return self._train_once(context, config, tokenized, settings, resume)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            release_memory()
            if attempt == self.config.oom_retries or settings.batch_size == 1:
                raise PluginError(
                    f"out of memory ({message}) with batch_size {settings.batch_size} x accumulation "
                    f"{settings.gradient_accumulation_steps}, after {attempt} retries. Knobs to turn: lower "
                    "max_seq_length (data_preparation), set gradient_checkpointing: true, use training_method: "
                    "qlora or lora, lower lora_r, use optim: adamw_8bit, or a smaller model.",
                    plugin=self.plugin_name(),
                    stage=context.stage.value,
                )
            effective = settings.batch_size * settings.gradient_accumulation_steps
            batch = settings.batch_size // 2
            settings = settings.model_copy(
                update={"batch_size": batch, "gradient_accumulation_steps": -(-effective // batch)}
            )
            latest = newest_complete_checkpoint(checkpoint_dir, context.warn)
            resume = str(latest) if latest else None
            context.warn(
                f"out of memory: retrying with batch_size {settings.batch_size} x accumulation "
                f"{settings.gradient_accumulation_steps} from {resume or 'the start'}"
            )
        raise AssertionError("unreachable: the loop returns or raises")

    def _resume_checkpoint(self, context, config: ResolvedTrainingConfig, checkpoint_dir: Path) -> str | None:
        from plugins.training.checkpoints import checkpoint_problems, newest_complete_checkpoint

        requested = config.resume_from_checkpoint
        if requested not in (None, "auto"):
            problems = checkpoint_problems(Path(requested))
            if problems:
                raise ConfigError(
                    Problem(
                        f"cannot resume from {requested}: {'; '.join(problems)}. Point resume_from_checkpoint "
                        "to a complete checkpoint, or use auto to take the newest complete one.",
                        path="resume_from_checkpoint",
                    )
                )
            return requested
        if requested == "auto" or context.resume:
            newest = newest_complete_checkpoint(checkpoint_dir, context.warn)
            if newest is None:
                context.log(f"no complete checkpoint in {checkpoint_dir}: starting training from the beginning")
                return None
            context.log(f"resuming training from {newest}")
            return str(newest)
        return None

    def _train_once(
        self, context, config: ResolvedTrainingConfig, tokenized, settings: TrainingShape, resume: str | None
    ) -> dict[str, Any]:
        from plugins.training.lean_imports import needs_bitsandbytes, training_imports
        from plugins.training.threads import OtherCpuUse

        # Sampled while the libraries are imported and the model loads; only torch_threads auto uses it.
        other_cpu_use = OtherCpuUse() if self.config.torch_threads == "auto" else None
        # Unused libraries stay hidden while the others are imported and the model is wrapped (peft
        # imports bitsandbytes on both).
        with training_imports(
            hide_bitsandbytes=not needs_bitsandbytes(load_in_4bit=config.load_in_4bit, optim=config.optim)
        ):
            import torch
            from transformers import set_seed

            from plugins.data.collator import PackedCollator
            from plugins.training.callbacks import EarlyStopping, EngineReportingCallback, MetricsFiles, TokenCounter
            from plugins.training.model_setup import load_model_for_training
            from plugins.training.resources import current_memory_bytes, peak_memory_bytes
            from plugins.training.trainer import PackedRows, PackedTrainer, tensorboard_callback, training_arguments

            threads_before = torch.get_num_threads()
            set_seed(config.seed)
            loaded = load_model_for_training(
                config, gradient_checkpointing=settings.gradient_checkpointing, device_map=_device_map(config)
            )
        self._set_torch_threads(context, other_cpu_use)
        checkpoint_dir = Path(context.run_dir) / CHECKPOINT_DIR
        main = context.is_main_process
        context.log(
            f"model {config.model_name_or_path}: {loaded.total_params:,} parameters, "
            f"{loaded.trainable_params:,} trainable ({100 * loaded.trainable_params / max(loaded.total_params, 1):.2f}%), "
            f"memory after loading {current_memory_bytes() / 2**20:.0f} MiB"
        )
        tokenizer = loaded.tokenizer
        tokenizer.chat_template = tokenized.get("chat_template") or tokenizer.chat_template
        train_rows = PackedRows(tokenized["train"])
        eval_rows = PackedRows(tokenized["validation"]) if tokenized.get("validation") else None
        if eval_rows is not None and len(eval_rows) == 0:
            eval_rows = None
        tokens = TokenCounter()
        files = MetricsFiles(context.run_dir) if main else None
        reporting = EngineReportingCallback(context, tokens, files)
        callbacks = [reporting]
        if config.early_stopping_patience and eval_rows is not None:
            callbacks.append(EarlyStopping(config.early_stopping_patience))
        if config.report_to == "tensorboard" and main:
            callbacks.append(tensorboard_callback(context.run_dir))
        trainer = PackedTrainer(
            model=loaded.model,
            args=training_arguments(
                config,
                checkpoint_dir=checkpoint_dir,
                has_validation=eval_rows is not None,
                evaluate_first=eval_rows is not None and resume is None,
                batch_size=settings.batch_size,
                gradient_accumulation_steps=settings.gradient_accumulation_steps,
                gradient_checkpointing=settings.gradient_checkpointing,
            ),
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            data_collator=PackedCollator(pad_token_id=tokenizer.pad_token_id),
            processing_class=tokenizer,
            callbacks=callbacks,
            tokens=tokens,
            checkpoint_dir=checkpoint_dir,
            save_total_limit=config.save_total_limit,
        )
        try:
            started = time.perf_counter()
            finished = _finished_checkpoint(resume, trainer.args.max_steps)
            if finished is not None:
                # Killed after its final checkpoint: the Trainer would take one step past max_steps.
                trainer._load_from_checkpoint(resume)
                trainer.state = finished
                reporting.history = list(finished.log_history)
                output = None
                context.log(f"{resume} already holds the final step {finished.global_step}: nothing left to train")
            else:
                output = trainer.train(resume_from_checkpoint=resume)
            initial = None
            if trainer.args.eval_on_start:
                initial = next(r for r in reporting.history if "eval_loss" in r)
            # The evaluation before the first step is not training time.
            train_seconds = time.perf_counter() - started - (initial["eval_runtime"] if initial else 0.0)
            if reporting.interrupted:
                saved = trainer.published[-1] if trainer.published else checkpoint_dir
                raise RunInterrupted(
                    f"training stopped at step {trainer.state.global_step}; checkpoint saved in {saved}"
                )
            if eval_rows is not None and not _evaluated_at(reporting.history, trainer.state.global_step):
                trainer.evaluate()
            trained_tokens = _sum_over_ranks(tokens.total)
            final_dir = Path(context.run_dir) / FINAL_MODEL_DIR
            if main:
                _save_final_model(trainer, tokenizer, config, final_dir)
            history = reporting.history
            evaluations = [r for r in history if "eval_loss" in r]
            best = min(evaluations, key=lambda r: r["eval_loss"], default=None)
            train_losses = [r["loss"] for r in history if "loss" in r]
            return {
                "final_model_path": str(final_dir),
                "method": config.training_method,
                "base_model": config.model_name_or_path,
                "train_loss": train_losses[-1] if train_losses else _average_loss(output),
                "average_train_loss": _average_loss(output),
                # Validation losses, per trained token (plugins/training/validation_loss.py): the
                # final model's (the last step), the lowest of any evaluation, and before training.
                "final_eval_loss": evaluations[-1]["eval_loss"] if evaluations else None,
                "best_eval_loss": best["eval_loss"] if best else None,
                "best_eval_step": best["step"] if best else None,
                "initial_eval_loss": initial["eval_loss"] if initial else None,
                "steps": int(trainer.state.global_step),
                "trained_tokens": trained_tokens,
                "train_seconds": round(train_seconds, 2),
                "tokens_per_second": round(trained_tokens / max(train_seconds, 1e-9), 1),
                "peak_memory_bytes": peak_memory_bytes(),
                "batch_size": settings.batch_size,
                "gradient_accumulation_steps": settings.gradient_accumulation_steps,
                "gradient_checkpointing": settings.gradient_checkpointing,
                "resumed_from": resume,
                "world_size": int(trainer.args.world_size),
                "log_history": history,
                "metrics_path": str(files.jsonl_path) if files else None,
            }
        finally:
            if files is not None:
                files.close()
            trainer.model = trainer.model_wrapped = None  # let the caller free the weights
            torch.set_num_threads(threads_before)  # the choice was for training, not for the stages after it

    def _set_torch_threads(self, context, other_cpu_use) -> None:
        import os

        import torch

        from plugins.training.threads import auto_threads

        requested = self.config.torch_threads
        if requested == "auto":
            choice = auto_threads(processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")), sample=other_cpu_use)
            torch.set_num_threads(choice.threads)
            context.log(choice.describe())
        elif requested is not None:
            torch.set_num_threads(requested)


def _device_map(config: ResolvedTrainingConfig):
    """Place a 4-bit model on this process's GPU at load time; the Trainer moves other models."""
    import os

    if config.device == "cuda" and config.load_in_4bit:
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return None


def _finished_checkpoint(resume: str | None, max_steps: int):
    """The TrainerState of ``resume`` when it already reached ``max_steps``, else None."""
    if not resume or max_steps <= 0:
        return None
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
    return state if state.global_step >= max_steps else None


def _average_loss(output) -> float | None:
    return float(output.training_loss) if output is not None else None


def _evaluated_at(history: list[dict[str, Any]], step: int) -> bool:
    return any(record.get("step") == step and "eval_loss" in record for record in history)


def _sum_over_ranks(value: int) -> int:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = torch.tensor([value], dtype=torch.long)
        torch.distributed.all_reduce(tensor)
        return int(tensor.item())
    return value


def _save_final_model(trainer, tokenizer, config: ResolvedTrainingConfig, final_dir: Path) -> None:
    """Adapter or full weights, the tokenizer with the training chat template, the resolved config."""
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    (final_dir / "training_config.json").write_text(
        json.dumps(config.model_dump(mode="json"), indent=2), encoding="utf-8"
    )
