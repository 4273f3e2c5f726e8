"""One training run of a DO plugin, around its Trainer: the steps fine_tuning and
preference_training share.

- ``resume_checkpoint``: the checkpoint to resume from (``resume_from_checkpoint`` or ``--resume``);
- ``train_with_oom_retries``: halve the micro-batch and retry from the last checkpoint on OOM;
- ``loaded_for_training``: the model loaded with lean imports (from training.config's model, or a
  ``StartingModel``), the CPU threads chosen (and given back afterwards);
- ``run_trainer``: the Trainer with the engine reporting, metrics files and TensorBoard; train (or
  recognise a finished checkpoint), stop with RunInterrupted after Ctrl-C, evaluate the last
  step, save ``final-model/`` and build the ``training.result`` dict.

Checkpoints and the final model go to ``checkpoints/`` and ``final-model/`` of an output folder:
the run directory, or for a step that continues an earlier DO step's model a folder of its own
(``continuing_output_dir``), so that neither resumes from nor overwrites the other's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entity_training import ConfigError, PluginError, Problem, RunInterrupted

if TYPE_CHECKING:
    from plugins.training.callbacks import EngineReportingCallback, MetricsFiles, TokenCounter
    from plugins.training.memory_plan import TrainingShape
    from plugins.training.model_setup import LoadedModel
    from plugins.training.run_config import TrainingRunConfig
    from plugins.training.starting_model import StartingModel
    from plugins.training_config import ResolvedTrainingConfig

CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL_DIR = "final-model"


def continuing_output_dir(context, plugin_name: str) -> Path:
    """The output folder of a DO step that starts from an earlier DO step's model."""
    return Path(context.run_dir) / plugin_name


def resume_checkpoint(context, config: ResolvedTrainingConfig, checkpoint_dir: Path) -> str | None:
    """An explicit ``resume_from_checkpoint`` (checked), else with ``auto`` or ``--resume`` the newest
    complete checkpoint, else None."""
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


def require_inputs(context, plugin_name: str, *, config, tokenized, plan) -> None:
    """Stop when an input of the training is missing from memory (a stage before it did not run)."""
    if config is None or tokenized is None or plan is None:
        raise PluginError(
            "needs training.config (training_config in PARSE), dataset.tokenized (data_preparation in THINK) "
            "and training.memory_plan (memory_plan in THINK)",
            plugin=plugin_name,
            stage=context.stage.value,
        )


async def train_in_worker(
    context,
    config: ResolvedTrainingConfig,
    settings: TrainingShape,
    train_once: Callable[[TrainingShape, str | None], dict[str, Any]],
    *,
    run_config: TrainingRunConfig,
    plugin_name: str,
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """``train_with_oom_retries`` in a worker thread, so that the engine's events and Ctrl-C flow."""
    import asyncio

    return await asyncio.to_thread(
        train_with_oom_retries,
        context,
        config,
        settings,
        train_once,
        retries=run_config.oom_retries,
        plugin_name=plugin_name,
        output_dir=output_dir,
    )


def train_with_oom_retries(
    context,
    config: ResolvedTrainingConfig,
    settings: TrainingShape,
    train_once: Callable[[TrainingShape, str | None], dict[str, Any]],
    *,
    retries: int,
    plugin_name: str,
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """``train_once(settings, resume)``; on out-of-memory, again with half the micro-batch and twice
    the accumulation from the newest checkpoint (in ``output_dir``, default the run directory), at
    most ``retries`` times."""
    from plugins.training.checkpoints import newest_complete_checkpoint
    from plugins.training.resources import is_out_of_memory, release_memory

    checkpoint_dir = Path(output_dir or context.run_dir) / CHECKPOINT_DIR
    resume = resume_checkpoint(context, config, checkpoint_dir)
    for attempt in range(retries + 1):
        try:
            return train_once(settings, resume)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        release_memory()
        if attempt == retries or settings.batch_size == 1:
            raise PluginError(
                f"out of memory ({message}) with batch_size {settings.batch_size} x accumulation "
                f"{settings.gradient_accumulation_steps}, after {attempt} retries. Knobs to turn: lower "
                "max_seq_length (data_preparation), set gradient_checkpointing: true, use training_method: "
                "qlora or lora, lower lora_r, use optim: adamw_8bit, or a smaller model.",
                plugin=plugin_name,
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


@contextmanager
def loaded_for_training(
    context,
    config: ResolvedTrainingConfig,
    settings: TrainingShape,
    run_config: TrainingRunConfig,
    tokenized: dict,
    start: StartingModel | None = None,
) -> Iterator[LoadedModel]:
    """The model and tokenizer (with the chat template of the ``tokenized`` data) for ``config``,
    from ``start`` (default: the model and adapter of ``config``), seeded; within the block torch
    uses the ``torch_threads`` setting of ``run_config``, and its thread count is given back afterwards."""
    torch_threads = run_config.torch_threads
    from plugins.training.lean_imports import needs_bitsandbytes, training_imports
    from plugins.training.threads import OtherCpuUse

    # Sampled while the libraries are imported and the model loads; only torch_threads auto uses it.
    other_cpu_use = OtherCpuUse() if torch_threads == "auto" else None
    # Unused libraries stay hidden while the others are imported and the model is wrapped (peft
    # imports bitsandbytes on both).
    with training_imports(
        hide_bitsandbytes=not needs_bitsandbytes(load_in_4bit=config.load_in_4bit, optim=config.optim)
    ):
        import torch
        from transformers import set_seed

        import plugins.training.trainer  # noqa: F401 (the Trainer's libraries, imported while hidden)
        from plugins.training.model_setup import load_model_for_training

        threads_before = torch.get_num_threads()
        set_seed(config.seed)
        loaded = load_model_for_training(
            config, gradient_checkpointing=settings.gradient_checkpointing, device_map=_device_map(config), start=start
        )
    try:
        set_torch_threads(context, torch_threads, other_cpu_use)
        _log_loaded_model(context, config, loaded, start)
        loaded.tokenizer.chat_template = tokenized.get("chat_template") or loaded.tokenizer.chat_template
        yield loaded
    finally:
        torch.set_num_threads(threads_before)  # the choice was for training, not for the stages after it


def set_torch_threads(context, requested, other_cpu_use) -> None:
    """Apply the ``torch_threads`` setting (``auto``: the cores other work leaves idle, logged)."""
    import os

    import torch

    from plugins.training.threads import auto_threads

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


def _log_loaded_model(context, config: ResolvedTrainingConfig, loaded, start: StartingModel | None) -> None:
    from plugins.training.resources import current_memory_bytes
    from plugins.training.starting_model import StartingModel

    start = start or StartingModel(config.model_name_or_path, config.adapter_path)
    context.log(
        f"model {start.describe()}: {loaded.total_params:,} parameters, "
        f"{loaded.trainable_params:,} trainable ({100 * loaded.trainable_params / max(loaded.total_params, 1):.2f}%), "
        f"memory after loading {current_memory_bytes() / 2**20:.0f} MiB"
    )


def _reporting_callbacks(
    context, config: ResolvedTrainingConfig, tokens: TokenCounter, *, has_validation: bool
) -> tuple[EngineReportingCallback, MetricsFiles | None, list]:
    """The engine reporting (metrics, progress, Ctrl-C), the metrics files of the main process,
    early stopping and TensorBoard when configured: (reporting, files, every callback)."""
    from plugins.training.callbacks import EarlyStopping, EngineReportingCallback, MetricsFiles
    from plugins.training.trainer import tensorboard_callback

    main = context.is_main_process
    files = MetricsFiles(context.run_dir) if main else None
    reporting = EngineReportingCallback(context, tokens, files)
    callbacks = [reporting]
    if config.early_stopping_patience and has_validation:
        callbacks.append(EarlyStopping(config.early_stopping_patience))
    if config.report_to == "tensorboard" and main:
        callbacks.append(tensorboard_callback(context.run_dir))
    return reporting, files, callbacks


def run_trainer(
    trainer_class,
    *,
    context,
    config: ResolvedTrainingConfig,
    settings: TrainingShape,
    resume: str | None,
    loaded: LoadedModel,
    train_rows,
    eval_rows,
    data_collator,
    before_training: Callable[[Any], None] | None = None,
    output_dir: Path | None = None,
    started_from: StartingModel | None = None,
    **trainer_arguments,
) -> dict[str, Any]:
    """Train ``loaded.model`` with a ``trainer_class`` (a CheckpointingTrainer) to the end and
    return the ``training.result`` dict. An empty ``eval_rows`` counts as none;
    ``before_training(trainer)`` runs once the trainer is built; checkpoints and the final model go
    to ``output_dir`` (default the run directory); ``started_from`` is recorded in the result."""
    from plugins.training.batch_digests import BatchDigests
    from plugins.training.callbacks import TokenCounter
    from plugins.training.trainer import training_arguments

    resumable_stream = hasattr(train_rows, "load_state")
    if eval_rows is not None and len(eval_rows) == 0:
        eval_rows = None
    has_validation = eval_rows is not None
    output_dir = Path(output_dir or context.run_dir)
    checkpoint_dir = output_dir / CHECKPOINT_DIR
    tokens = TokenCounter()
    reporting, files, callbacks = _reporting_callbacks(context, config, tokens, has_validation=has_validation)
    trainer = trainer_class(
        model=loaded.model,
        args=training_arguments(
            config,
            checkpoint_dir=checkpoint_dir,
            has_validation=has_validation,
            evaluate_first=has_validation and resume is None,
            batch_size=settings.batch_size,
            gradient_accumulation_steps=settings.gradient_accumulation_steps,
            gradient_checkpointing=settings.gradient_checkpointing,
            resumable_stream=resumable_stream,
        ),
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=data_collator,
        processing_class=loaded.tokenizer,
        callbacks=callbacks,
        tokens=tokens,
        checkpoint_dir=checkpoint_dir,
        save_total_limit=config.save_total_limit,
        batch_digests=BatchDigests(output_dir, write=context.is_main_process),
        **trainer_arguments,
    )
    if resumable_stream and resume is not None:
        trainer.rows_trained = train_rows.load_state(Path(resume))
    if before_training is not None:
        before_training(trainer)
    return _finish_training(
        trainer,
        context=context,
        config=config,
        settings=settings,
        resume=resume,
        reporting=reporting,
        files=files,
        tokens=tokens,
        tokenizer=loaded.tokenizer,
        has_validation=has_validation,
        output_dir=output_dir,
        started_from=started_from,
    )


def _finish_training(
    trainer,
    *,
    context,
    config: ResolvedTrainingConfig,
    settings: TrainingShape,
    resume: str | None,
    reporting: EngineReportingCallback,
    files: MetricsFiles | None,
    tokens: TokenCounter,
    tokenizer,
    has_validation: bool,
    output_dir: Path,
    started_from: StartingModel | None,
) -> dict[str, Any]:
    """Train to the end, save ``final-model/`` and return the ``training.result`` dict.

    Raises RunInterrupted after Ctrl-C (the checkpoint is saved first). The metrics files are
    closed and the trainer lets go of the model afterwards, whatever happens.
    """
    from plugins.training.resources import peak_memory_bytes
    from plugins.training.sharding import save_final_weights

    checkpoint_dir = output_dir / CHECKPOINT_DIR
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
            raise RunInterrupted(f"training stopped at step {trainer.state.global_step}; checkpoint saved in {saved}")
        if has_validation and not _evaluated_at(reporting.history, trainer.state.global_step):
            trainer.evaluate()
        trained_tokens = _sum_over_ranks(tokens.total)
        final_dir = output_dir / FINAL_MODEL_DIR
        save_final_weights(trainer, final_dir)  # every rank sends its shards; the main process writes
        if context.is_main_process:
            _save_final_files(tokenizer, config, final_dir)
        history = reporting.history
        evaluations = [r for r in history if "eval_loss" in r]
        best = min(evaluations, key=lambda r: r["eval_loss"], default=None)
        train_losses = [r["loss"] for r in history if "loss" in r]
        return {
            "final_model_path": str(final_dir),
            "method": config.training_method,
            "base_model": config.model_name_or_path,
            # The adapter or model the run continued (None: it started from base_model as it is).
            "started_from": _start_record(config, started_from),
            "train_loss": train_losses[-1] if train_losses else _average_loss(output),
            "average_train_loss": _average_loss(output),
            # Validation losses: the final model's (the last step), the lowest of any evaluation,
            # and before training (for fine_tuning, per trained token: plugins/training/validation_loss.py).
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


def _finished_checkpoint(resume: str | None, max_steps: int):
    """The TrainerState of ``resume`` when it already reached ``max_steps``, else None."""
    if not resume or max_steps <= 0:
        return None
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
    return state if state.global_step >= max_steps else None


def _start_record(config: ResolvedTrainingConfig, start: StartingModel | None) -> dict[str, Any] | None:
    model, adapter = (start.model, start.adapter) if start else (config.model_name_or_path, config.adapter_path)
    if model == config.model_name_or_path and adapter is None:
        return None
    return {"model": model, "adapter": adapter, "origin": start.origin if start else "training_config"}


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


def _save_final_files(tokenizer, config: ResolvedTrainingConfig, final_dir: Path) -> None:
    """Beside the weights: the tokenizer with the training chat template, the resolved config."""
    tokenizer.save_pretrained(str(final_dir))
    (final_dir / "training_config.json").write_text(
        json.dumps(config.model_dump(mode="json"), indent=2), encoding="utf-8"
    )
