"""The transformers Trainer, set up for padding-free packed rows and atomic checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import PrinterCallback, Trainer, TrainingArguments

from plugins.training.batch_digests import BatchDigests
from plugins.training.callbacks import TokenCounter
from plugins.training.checkpoints import STAGING_DIR, best_step_of, prune_checkpoints, publish_checkpoint
from plugins.training.chunked_loss import chunked_causal_lm_loss, chunked_row_losses, split_for_chunked_loss
from plugins.training.device import distributed_launch
from plugins.training.sharding import fsdp_requested, shard_on_cpu
from plugins.training.validation_loss import row_losses, token_mean

if TYPE_CHECKING:
    from plugins.training_config import ResolvedTrainingConfig


class PackedRows(torch.utils.data.Dataset):
    """The tokenized rows of the data preparation stage, as the Trainer's dataset."""

    def __init__(self, path: str):
        from plugins.data.tokenized import load_tokenized

        self.rows = load_tokenized(path)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


def training_arguments(
    config: ResolvedTrainingConfig,
    *,
    checkpoint_dir: Path,
    has_validation: bool,
    evaluate_first: bool = False,
    batch_size: int,
    gradient_accumulation_steps: int,
    gradient_checkpointing: bool,
    resumable_stream: bool = False,
) -> TrainingArguments:
    """Map the resolved training config onto TrainingArguments, avoiding per-step overheads."""
    on_cpu = config.device == "cpu"
    eval_strategy = "no"
    if has_validation:
        eval_strategy = "steps" if config.evaluation_steps else "epoch"
    return TrainingArguments(
        output_dir=str(checkpoint_dir / STAGING_DIR),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps or config.warmup_ratio,
        weight_decay=config.weight_decay,
        optim=config.optim,
        max_grad_norm=config.max_grad_norm,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        use_cpu=on_cpu,
        activation_checkpointing=gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=config.evaluation_steps,
        # Inside train(), once the model is prepared: an evaluate() before train() marks the model
        # as prepared for Accelerate, which then leaves it out of DDP (ranks train apart).
        eval_on_start=evaluate_first,
        metric_for_best_model="eval_loss" if has_validation else None,
        greater_is_better=False if has_validation else None,
        prediction_loss_only=True,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=None,  # pruning is ours: it keeps the best checkpoint too
        seed=config.seed,
        data_seed=config.seed,
        # TensorBoard is attached by tensorboard_callback, to log into the run directory.
        report_to=[] if config.report_to in ("none", "tensorboard") else [config.report_to],
        remove_unused_columns=False,  # the packed rows carry position_ids and seq_lengths
        dataloader_num_workers=config.dataloader_num_workers,
        dataloader_pin_memory=not on_cpu,
        ddp_backend="gloo" if on_cpu and distributed_launch() else None,
        ddp_find_unused_parameters=False,
        disable_tqdm=True,  # the engine's console draws the progress bar
        save_only_model=False,
        # A resumable stream restores its own position from the checkpoint; the Trainer's skipping
        # would read (and for a stream, tokenize) every trained batch again.
        ignore_data_skip=resumable_stream,
    )


class CheckpointingTrainer(Trainer):
    """The Trainer of every training plugin: counts trained tokens (``labels`` != -100), publishes
    checkpoints atomically and leaves the metrics display to the engine's console.

    The Trainer writes each checkpoint into ``checkpoints/.staging``; once every rank has
    written its part, the main process verifies it, renames it to ``checkpoints/checkpoint-N``
    and prunes old ones (keeping the best).
    """

    def __init__(
        self,
        *args,
        tokens: TokenCounter,
        checkpoint_dir: Path,
        save_total_limit: int,
        batch_digests: BatchDigests | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.remove_callback(PrinterCallback)  # the engine's console shows the metrics
        self.tokens = tokens
        self.checkpoint_dir = Path(checkpoint_dir)
        self.keep_checkpoints = save_total_limit
        self.published: list[Path] = []
        self.batch_digests = batch_digests
        if batch_digests is not None:
            self.add_callback(batch_digests)
        # Rows this process has trained on since the start (set on resume): where a streamed
        # dataset's saved state must be, since its loader reads ahead of training.
        self.rows_trained = 0

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.args.use_cpu and fsdp_requested() and distributed_launch() and not self.is_fsdp_enabled:
            shard_on_cpu(self.accelerator)
            self.is_fsdp_enabled = True

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.tokens.total += int((inputs["labels"] != -100).sum())
        self.rows_trained += int(inputs["labels"].shape[0])
        if self.batch_digests is not None:
            self.batch_digests.add(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        staged = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save and hasattr(self.train_dataset, "save_state"):
            self.train_dataset.save_state(staged, rows=self.rows_trained)
        self._barrier()
        if self.args.should_save:
            published = publish_checkpoint(staged, self.checkpoint_dir)
            self.published.append(published)
            prune_checkpoints(self.checkpoint_dir, self.keep_checkpoints, best_step_of(published))
        self._barrier()

    def _barrier(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


class PackedTrainer(CheckpointingTrainer):
    """Measures the validation loss per trained token, on packed rows; the chunked loss for large vocabularies."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.split_model = split_for_chunked_loss(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The chunked loss (no full logits) for large vocabularies, else the model's own."""
        # A wrapped model (DDP, compiled) must run its own forward; outputs asked for need the full path.
        if self.split_model is None or model is not self.model or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        features = {name: value for name, value in inputs.items() if name != "labels"}
        split = self.split_model
        # Mixed precision autocasts the wrapped model's forward; the decoder called directly needs it here.
        with self.accelerator.autocast():
            hidden = split.decoder(**features).last_hidden_state
        return chunked_causal_lm_loss(hidden, split.head, inputs["labels"], num_items_in_batch, split.tokens_per_chunk)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The batch's loss per trained token, and each row's (summed loss, trained tokens) in
        place of logits: the evaluation loop gathers those per row, dropping the rows that a
        distributed last batch repeats, and ``evaluation_loop`` turns them into ``eval_loss``."""
        inputs = self._prepare_inputs(inputs)
        features = {name: value for name, value in inputs.items() if name != "labels"}
        with torch.no_grad():
            if self.split_model is not None and model is self.model:
                split = self.split_model
                with self.accelerator.autocast():
                    hidden = split.decoder(**features).last_hidden_state
                sums, counts = chunked_row_losses(hidden, split.head, inputs["labels"], split.tokens_per_chunk)
            else:
                with self.compute_loss_context_manager():
                    sums, counts = row_losses(model(**features).logits, inputs["labels"])
        stats = torch.stack([sums, counts.to(sums.dtype)], dim=-1)
        return sums.sum() / counts.sum().clamp(min=1), stats, None

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The Trainer's loop, with ``eval_loss`` the mean per trained token (validation_loss.py)
        instead of its mean of per-batch means."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if output.predictions is not None:
            output.metrics[f"{metric_key_prefix}_loss"] = token_mean(output.predictions)
        return output


def tensorboard_callback(run_dir: Path):
    """TensorBoard logging into ``run_dir/tensorboard`` (the Trainer's default is under output_dir)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard")))
