"""The transformers Trainer, set up for padding-free packed rows and atomic checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainingArguments

from plugins.training.callbacks import TokenCounter
from plugins.training.checkpoints import STAGING_DIR, best_step_of, prune_checkpoints, publish_checkpoint
from plugins.training.chunked_loss import chunked_causal_lm_loss, split_for_chunked_loss
from plugins.training.device import distributed_launch


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
    config: dict[str, Any],
    *,
    checkpoint_dir: Path,
    has_validation: bool,
    batch_size: int,
    gradient_accumulation_steps: int,
    gradient_checkpointing: bool,
) -> TrainingArguments:
    """Map the resolved training config onto TrainingArguments, avoiding per-step overheads."""
    on_cpu = config["device"] == "cpu"
    eval_strategy = "no"
    if has_validation:
        eval_strategy = "steps" if config["evaluation_steps"] else "epoch"
    return TrainingArguments(
        output_dir=str(checkpoint_dir / STAGING_DIR),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=config["num_epochs"],
        max_steps=config["max_steps"] or -1,
        learning_rate=config["learning_rate"],
        lr_scheduler_type=config["lr_scheduler"],
        warmup_steps=config["warmup_steps"] or config["warmup_ratio"],
        weight_decay=config["weight_decay"],
        optim=config["optim"],
        max_grad_norm=config["max_grad_norm"],
        bf16=config["precision"] == "bf16",
        fp16=config["precision"] == "fp16",
        use_cpu=on_cpu,
        activation_checkpointing=gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        logging_strategy="steps",
        logging_steps=config["logging_steps"],
        eval_strategy=eval_strategy,
        eval_steps=config["evaluation_steps"],
        metric_for_best_model="eval_loss" if has_validation else None,
        greater_is_better=False if has_validation else None,
        prediction_loss_only=True,
        save_strategy="steps" if config["save_steps"] else "no",
        save_steps=config["save_steps"] or 500,
        save_total_limit=None,  # pruning is ours: it keeps the best checkpoint too
        seed=config["seed"],
        data_seed=config["seed"],
        # TensorBoard is attached by tensorboard_callback, to log into the run directory.
        report_to=[] if config["report_to"] in ("none", "tensorboard") else [config["report_to"]],
        remove_unused_columns=False,  # the packed rows carry position_ids and seq_lengths
        dataloader_num_workers=config["dataloader_num_workers"],
        dataloader_pin_memory=not on_cpu,
        ddp_backend="gloo" if on_cpu and distributed_launch() else None,
        ddp_find_unused_parameters=False,
        disable_tqdm=True,  # the engine's console draws the progress bar
        save_only_model=False,
    )


class PackedTrainer(Trainer):
    """Counts trained tokens and publishes checkpoints atomically.

    The Trainer writes each checkpoint into ``checkpoints/.staging``; once every rank has
    written its part, the main process verifies it, renames it to ``checkpoints/checkpoint-N``
    and prunes old ones (keeping the best).
    """

    def __init__(self, *args, tokens: TokenCounter, checkpoint_dir: Path, save_total_limit: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.remove_callback(PrinterCallback)  # the engine's console shows the metrics
        self.tokens = tokens
        self.checkpoint_dir = Path(checkpoint_dir)
        self.keep_checkpoints = save_total_limit
        self.published: list[Path] = []
        self.split_model = split_for_chunked_loss(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The chunked loss (no full logits) for large vocabularies, else the model's own."""
        # A wrapped model (DDP, compiled) must run its own forward; logits asked for need the full path.
        wrapped = model is not self.model
        if self.split_model is None or wrapped or (return_outputs and not self.args.prediction_loss_only):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        features = {name: value for name, value in inputs.items() if name != "labels"}
        split = self.split_model
        hidden = split.decoder(**features).last_hidden_state
        loss = chunked_causal_lm_loss(hidden, split.head, inputs["labels"], num_items_in_batch, split.tokens_per_chunk)
        # Evaluation asks for the outputs too; with prediction_loss_only it only needs the loss.
        return (loss, {}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.tokens.total += int((inputs["labels"] != -100).sum())
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        staged = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        self._barrier()
        if self.args.should_save:
            published = publish_checkpoint(staged, self.checkpoint_dir)
            self.published.append(published)
            prune_checkpoints(self.checkpoint_dir, self.keep_checkpoints, best_step_of(published))
        self._barrier()

    def _barrier(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


def tensorboard_callback(run_dir: Path):
    """TensorBoard logging into ``run_dir/tensorboard`` (the Trainer's default is under output_dir)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard")))
