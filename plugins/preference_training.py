"""PreferenceTrainingPlugin (DO): train the model on preference data: DPO, IPO, ORPO, SimPO on pairs
(a chosen and a rejected answer per prompt), KTO on completions labelled desirable or not.

Features:
- the losses on our own Trainer (plugins/training/preference/): one forward of a batch's chosen and
  rejected sequences together, each padded on the right to the batch's longest; log-probabilities
  summed over the answer tokens the data preparation marked (labels != -100);
- the starting model: the model an earlier DO step left in ``training.result`` (SFT then DPO in one
  workflow: ``fine_tuning`` then ``preference_training``), else training_config's model, which may
  be a PEFT adapter folder (trained on its base). Its checkpoints and ``final-model/`` then go to
  ``<run dir>/preference_training/``, and its ``training.result`` replaces the earlier one as the
  newest model (what REVIEW and model_export read);
- the reference model of DPO, IPO and KTO is the starting model: with a fresh adapter (lora, dora,
  qlora) the same model with the adapter disabled, so no second copy; for full training a frozen
  copy at the compute precision, or with ``precompute_ref_logps`` the reference log-probabilities
  computed in one pass before training. ORPO and SimPO need no reference;
- a starting adapter is continued as saved (its rank, alpha, targets; training_config's LoRA
  settings that differ are announced as ignored), and its reference log-probabilities are always
  precomputed from the starting model (said in the log), because that model with the adapter
  disabled is the base before the SFT, not the SFT model. Why not merge the SFT adapter into the
  base and add a fresh one (then "adapter disabled" is the SFT model): a 4-bit QLoRA base cannot
  take a merge without rounding the adapter away, and the one adapter keeps the export a plain
  base + adapter; the precomputed pass costs one forward per example, once (also on resume: the
  checkpoint is loaded after it). A full-weights starting model is loaded as the model itself;
- the hyper-parameters of ``training.config`` and the batch, accumulation and checkpointing of
  ``training.memory_plan``, as fine_tuning; its checkpoints, resume, Ctrl-C, out-of-memory
  retries, metrics files, TensorBoard and ``final-model/`` (plugins/training/session.py);
- metrics each logging step: loss, rewards/chosen, rewards/rejected, rewards/margins,
  rewards/accuracies (KTO: of desirable and undesirable completions, and its kl).

Why not TRL's trainers: DPOTrainer, KTOTrainer, CPOTrainer and ORPOTrainer each take their own
data layout (prompt and answers apart, tokenized by them) and own collator, reference handling and
metrics; our data is already tokenized and masked by the data preparation, and the losses are a few
lines each (plugins/training/preference/losses.py), so one Trainer serves all five.

Raises:
    ConfigError: a loss that does not fit the data (kto needs unpaired completions, the others
        pairs), or an explicit resume_from_checkpoint that is not a complete checkpoint.
    InputError: supervised (SFT) data, which has no preferences; an earlier step's final model
        that no longer exists.
    RunInterrupted: the user pressed Ctrl-C (a checkpoint was saved first).
    PluginError: out of memory even after the retries, or a missing input from earlier stages.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import Field

from entity_training import ConfigError, Finding, InputError, Plugin, Problem, Stage
from plugins import memory_keys
from plugins.training.preference.losses import REFERENCE_FREE, TASK_OF_LOSS, LossName
from plugins.training.run_config import TrainingRunConfig

if TYPE_CHECKING:
    from pathlib import Path

    from plugins.training.memory_plan import TrainingShape
    from plugins.training.starting_model import StartingModel
    from plugins.training_config import ResolvedTrainingConfig


class PreferenceTrainingConfig(TrainingRunConfig):
    loss: LossName = Field(
        "dpo",
        description=(
            "dpo: the standard, against a reference model; ipo: DPO's squared-error variant, less prone to "
            "overfitting; simpo: no reference, length-normalised, with a target margin; orpo: no reference, "
            "adds the chosen answers' language-model loss (no SFT step needed); kto: unpaired completions "
            "labelled desirable or not."
        ),
    )
    beta: float = Field(
        0.1,
        gt=0,
        description=(
            "dpo, ipo, kto: how far the model may move from the reference (lower moves further; 0.1 is usual); "
            "simpo: the reward scale (2.0 is usual); orpo: the weight of the odds-ratio loss (0.1 is usual)."
        ),
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="dpo and simpo: the share of pairs assumed mislabelled (conservative DPO); 0 trusts every pair.",
    )
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: the target margin between chosen and rejected rewards.")
    desirable_weight: float = Field(1.0, gt=0, description="kto: the weight of the desirable completions' loss.")
    undesirable_weight: float = Field(
        1.0,
        gt=0,
        description=(
            "kto: the weight of the undesirable completions' loss; with unbalanced data, set the weights so that "
            "desirable_weight x desirable rows / (undesirable_weight x undesirable rows) is between 1 and 4/3."
        ),
    )
    rpo_alpha: float | None = Field(
        None,
        ge=0,
        description=(
            "dpo, ipo, simpo: add the chosen answers' language-model loss (mean per answer token) times this "
            "weight, as RPO and TRL's rpo_alpha (1.0 is the paper's): keeps the chosen answers likely while the "
            "rejected ones are pushed down, which stops a small model's answers from degenerating; null: off."
        ),
    )
    precompute_ref_logps: bool = Field(
        False,
        description=(
            "Compute the reference log-probabilities once, in a pass before training, instead of a reference "
            "forward every step. Cheaper in time from the second epoch on (one reference pass in all instead "
            "of one per epoch), and for full training cheaper in memory (no frozen copy of the weights); with "
            "an adapter the reference costs no memory anyway. Ignored by orpo and simpo, which have no reference."
        ),
    )


# The losses that read each setting; one set for a loss that ignores it is announced at load.
_READ_BY = {
    "label_smoothing": ("dpo", "simpo"),
    "simpo_gamma": ("simpo",),
    "rpo_alpha": ("dpo", "ipo", "simpo"),
    "desirable_weight": ("kto",),
    "undesirable_weight": ("kto",),
    "precompute_ref_logps": tuple(name for name in TASK_OF_LOSS if name not in REFERENCE_FREE),
}


class PreferenceTrainingPlugin(Plugin):
    name = "preference_training"
    description = "Train the model on preference pairs (DPO, IPO, ORPO, SimPO) or labelled completions (KTO)."
    supported_stages = (Stage.DO,)
    dependencies = (memory_keys.TRAINING_CONFIG, memory_keys.DATASET_TOKENIZED, memory_keys.TRAINING_MEMORY_PLAN)
    # An earlier DO step's model (e.g. fine_tuning's, for SFT then DPO) is the starting point.
    optional_dependencies = (memory_keys.TRAINING_RESULT,)
    provides = (memory_keys.TRAINING_RESULT,)

    ConfigModel = PreferenceTrainingConfig

    def check_workflow(self, plugins) -> list[Finding]:
        return [
            Finding(f"{name} is ignored by loss {self.config.loss} (read by {', '.join(losses)})", key=name)
            for name, losses in _READ_BY.items()
            if self.config.loss not in losses and name in self.config.model_fields_set
        ]

    async def _execute_impl(self, context) -> str:
        from plugins.training.session import require_inputs, train_in_worker

        config = context.recall(memory_keys.TRAINING_CONFIG)
        tokenized = context.recall(memory_keys.DATASET_TOKENIZED)
        plan = context.recall(memory_keys.TRAINING_MEMORY_PLAN)
        require_inputs(context, self.plugin_name(), config=config, tokenized=tokenized, plan=plan)
        _check_task(self.config.loss, tokenized.get("task") or "sft")
        start, output_dir = self._starting_point(context, config)
        precompute = self._reference_is_precomputed(context, config, start)
        train_once = partial(self._train_once, context, config, tokenized, start, precompute, output_dir)
        result = await train_in_worker(
            context,
            config,
            plan.settings,
            train_once,
            run_config=self.config,
            plugin_name=self.plugin_name(),
            output_dir=output_dir,
        )
        result["loss"] = self.config.loss
        result["beta"] = self.config.beta  # evaluation weighs the implicit reward with it
        context.remember(memory_keys.TRAINING_RESULT, result)
        context.summarize("train_loss", result["train_loss"])
        context.summarize("final_eval_loss", result["final_eval_loss"])
        context.summarize("final_model_path", result["final_model_path"])
        accuracy = next(
            (r["eval_rewards/accuracies"] for r in reversed(result["log_history"]) if "eval_rewards/accuracies" in r),
            None,
        )
        eval_part = ""
        if result["final_eval_loss"] is not None:
            eval_part = f", validation loss {result['final_eval_loss']:.4f}"
            if accuracy is not None:
                context.summarize("preference_accuracy", accuracy)
                eval_part += f", preference accuracy {accuracy:.0%}"
        return f"{self.config.loss}: {result['steps']} steps, train loss {result['train_loss']:.4f}{eval_part}"

    async def cleanup(self, context) -> None:
        from plugins.training.resources import release_memory

        release_memory()

    # -- training -----------------------------------------------------------------------------
    def _starting_point(self, context, config: ResolvedTrainingConfig) -> tuple[StartingModel, Path | None]:
        """The model to start from, and the folder of the checkpoints and final model (None: the run
        directory; a folder of its own after an earlier DO step, whose files it must not touch)."""
        from plugins.models.adapters import read_adapter_config
        from plugins.training.session import continuing_output_dir
        from plugins.training.starting_model import starting_model, warn_ignored_lora_settings

        previous = context.recall(memory_keys.TRAINING_RESULT)
        start = starting_model(config, previous)
        context.log(f"{self.config.loss} starts from {start.describe()}")
        if previous is None:
            return start, None
        if start.adapter is not None:
            warn_ignored_lora_settings(context.warn, config, read_adapter_config(start.adapter))
        return start, continuing_output_dir(context, self.plugin_name())

    def _reference_is_precomputed(self, context, config: ResolvedTrainingConfig, start: StartingModel) -> bool:
        """Whether the reference log-probabilities are computed before training. Forced when an
        adapter is continued: disabling it would give the base model before that adapter's training."""
        from plugins.training.preference.losses import needs_reference

        if not needs_reference(self.config.loss):
            return False
        if start.adapter is not None and config.training_method != "full":
            if not self.config.precompute_ref_logps:
                context.log(
                    f"precompute_ref_logps: true (forced): the reference of {self.config.loss} is the starting "
                    "model, the continued adapter included, so its log-probabilities are computed before training "
                    "(the model with the adapter disabled would be the base before that adapter's training)"
                )
            return True
        return self.config.precompute_ref_logps

    def _train_once(
        self,
        context,
        config: ResolvedTrainingConfig,
        tokenized,
        start: StartingModel,
        precompute: bool,
        output_dir: Path | None,
        settings: TrainingShape,
        resume: str | None,
    ) -> dict[str, Any]:
        from plugins.training.session import loaded_for_training, run_trainer

        with loaded_for_training(context, config, settings, self.config, tokenized, start) as loaded:
            from plugins.training.preference.batches import PreferenceCollator, PreferenceRows
            from plugins.training.preference.trainer import PreferenceTrainer

            train_rows = PreferenceRows(tokenized["train"])
            eval_rows = PreferenceRows(tokenized["validation"]) if tokenized.get("validation") else None

            def precompute_reference(trainer: PreferenceTrainer) -> None:
                # Also on resume: the model is the starting point until train() loads the checkpoint.
                for rows in (train_rows, eval_rows):
                    if rows is not None and len(rows):
                        trainer.precompute_reference(rows)
                context.log(f"reference log-probabilities computed for {len(train_rows)} training examples")

            return run_trainer(
                PreferenceTrainer,
                context=context,
                config=config,
                settings=settings,
                resume=resume,
                loaded=loaded,
                train_rows=train_rows,
                eval_rows=eval_rows,
                data_collator=PreferenceCollator(pad_token_id=loaded.tokenizer.pad_token_id),
                before_training=precompute_reference if precompute else None,
                output_dir=output_dir,
                started_from=start,
                loss_settings=self.config,
                ref_model=self._frozen_copy(loaded.model, config, precompute),
            )

    def _frozen_copy(self, model, config: ResolvedTrainingConfig, precompute: bool):
        """Full training's reference model: a frozen copy at the compute precision (autocast runs
        its maths at that precision anyway), unless the reference is precomputed or not needed."""
        import copy

        from plugins.training.precision import torch_dtype
        from plugins.training.preference.losses import needs_reference

        if config.training_method != "full" or precompute or not needs_reference(self.config.loss):
            return None
        return copy.deepcopy(model).to(torch_dtype(config.precision))


def _check_task(loss: str, task: str) -> None:
    """Stop before loading the model when the data does not fit the loss."""
    if task == "sft":
        raise InputError(
            Problem(
                "preference_training needs preference data (chosen and rejected answers, or completions labelled "
                "desirable or not), but dataset.tokenized holds supervised (SFT) conversations. Give a preference "
                "dataset to the data preparation, or train on these conversations with the fine_tuning plugin."
            )
        )
    needed = TASK_OF_LOSS[loss]
    if task != needed:
        what = {"preference": "pairs (chosen and rejected answers)", "unpaired": "unpaired labelled completions"}
        raise ConfigError(
            Problem(
                f"loss {loss} trains on {what[needed]}, but the data holds {what.get(task, task)}. "
                + (
                    "Use loss: kto for unpaired data."
                    if task == "unpaired"
                    else "Use dpo, ipo, orpo or simpo for pairs."
                ),
                path="loss",
            )
        )
