"""EvaluationPlugin (REVIEW): measure the fine-tuned model, compare with its base, decide PASS/FAIL.

One plugin for both kinds of training data, by ``dataset.tokenized["task"]``.

Supervised (SFT) data:
- Loss and perplexity over the trained tokens of the evaluation split, with the same masking and
  packing as training (``dataset.tokenized``), or of ``eval_dataset_path`` tokenized the same way.
- BLEU, ROUGE and exact match on answers generated for ``num_samples`` prompts rendered with the
  chat template used in training, for the fine-tuned and (``compare_with_base``) the base model.
- The behavioural pass rate on held-out prompts (``behaviour_checks``, see ``plugins.eval.behaviour``),
  answered greedily by both models.

Preference data (pairs for DPO, IPO, ORPO, SimPO; labelled completions for KTO), on the held-out
split or ``eval_dataset_path`` tokenized the same way (``plugins.eval.preference``):
- for the tuned model and its starting point (the base with the adapter disabled, or the start
  model of full training), the answer log-probabilities of every held-out sequence: preference
  accuracy and margin (per answer token, and summed), or for KTO the desirable and undesirable
  completions' log-probabilities;
- the tuned model's implicit reward against its start: beta x the log-ratio, with the beta of
  preference_training for dpo, ipo and kto (0.1 otherwise);
- ``num_samples`` held-out prompts answered by both models beside the chosen answer;
- behaviour checks as for SFT data. The SFT ``metrics`` do not apply and are ignored (announced
  when set); an SFT threshold on preference data, or a preference one on SFT data, is refused.

Both: PASS/FAIL against ``thresholds``; each failure says which threshold and by how much.

Raises:
    ConfigError: a threshold that does not fit the data (at load when the workflow's training
        step tells the data, else when the step starts), or an ``eval_dataset_path`` holding
        another kind of data than the training's.
    InputError: no evaluation data (no validation split and no ``eval_dataset_path``); a bad
        behaviour checks file (checked before the run starts).
    ReviewFailed: (exit 3) a threshold failed and ``on_fail`` is ``stop``; OUTPUT is skipped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from entity_training import ConfigError, InputError, PluginConfig, Problem, ReviewFailed, Stage
from entity_training.plugin import Finding, Plugin
from plugins import memory_keys as keys
from plugins.data.conversation_files import read_conversations

Metric = Literal["loss", "perplexity", "bleu", "rouge", "exact_match"]
# The thresholds that read each kind of data (behaviour_min reads generated answers: both).
SFT_THRESHOLDS = ("perplexity_max", "loss_max", "improvement_min", "bleu_min", "rouge_l_min", "exact_match_min")
PREFERENCE_THRESHOLDS = ("preference_accuracy_min", "preference_margin_min", "reward_accuracy_min")


class GenerationSettings(PluginConfig):
    max_new_tokens: int = Field(64, gt=0, le=4096, description="Most tokens generated per answer.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(0.7, gt=0, le=5, description="Sampling temperature (with do_sample).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass (with do_sample).")
    seed: int = Field(0, ge=0, description="Seed set before each generation, for reproducible samples.")


class Thresholds(PluginConfig):
    perplexity_max: float | None = Field(None, gt=0, description="FAIL when the fine-tuned perplexity is above this.")
    loss_max: float | None = Field(None, gt=0, description="FAIL when the fine-tuned eval loss is above this.")
    improvement_min: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="FAIL when the relative eval-loss reduction over the base model, (base - tuned) / base, is below this.",
    )
    bleu_min: float | None = Field(None, ge=0, le=100, description="FAIL when BLEU (0-100) is below this.")
    rouge_l_min: float | None = Field(None, ge=0, le=1, description="FAIL when ROUGE-L F1 (0-1) is below this.")
    exact_match_min: float | None = Field(
        None, ge=0, le=1, description="FAIL when the exact-match rate (0-1) is below this."
    )
    behaviour_min: float | None = Field(
        None,
        ge=0,
        le=1,
        description="FAIL when the share of behaviour checks the fine-tuned model passes (0-1) is below this.",
    )
    preference_accuracy_min: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Preference pairs: FAIL when the tuned model's preference accuracy (0-1), the share of held-out "
        "pairs whose chosen answer has the higher mean log-probability per answer token, is below this.",
    )
    preference_margin_min: float | None = Field(
        None,
        description="Preference data: FAIL when the tuned model's mean margin, in log-probability per answer "
        "token, is below this: chosen minus rejected for pairs, desirable minus undesirable for KTO completions.",
    )
    reward_accuracy_min: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Preference data: FAIL when the share of held-out examples the tuned model moved the right way "
        "from its starting point (0-1) is below this: pairs whose chosen answer gained more log-probability than "
        "the rejected one (DPO's reward accuracy), or KTO completions whose log-probability rose if desirable and "
        "fell if not. Needs compare_with_base.",
    )


class EvaluationPlugin(Plugin):
    name = "evaluation"
    description = (
        "Loss, perplexity, BLEU, ROUGE, or preference accuracy and margins, and sample answers, fine-tuned vs base; "
        "PASS/FAIL by thresholds."
    )
    supported_stages = (Stage.REVIEW,)
    dependencies = (keys.TRAINING_RESULT, keys.DATASET_TOKENIZED)
    optional_dependencies = (keys.DATASET_VALIDATION, keys.TRAINING_CONFIG)
    provides = (keys.EVALUATION_REPORT,)

    class ConfigModel(PluginConfig):
        eval_dataset_path: str | None = Field(
            None,
            description="Evaluation data file (any format the dataset loader reads); default: the validation split.",
        )
        metrics: list[Metric] = Field(
            default_factory=lambda: ["loss", "perplexity", "bleu", "rouge"],
            min_length=1,
            description="Metrics to compute: loss, perplexity, bleu, rouge, exact_match.",
        )
        num_samples: int = Field(
            8, ge=0, le=1000, description="Prompts answered for BLEU/ROUGE/exact match and the report."
        )
        max_eval_rows: int | None = Field(
            None,
            gt=0,
            description="Cap on tokenized rows used for the loss (preference data: examples scored); default: all.",
        )
        batch_size: int = Field(
            4,
            gt=0,
            le=1024,
            description="Rows per forward pass when computing the loss (preference data: examples, each with its sequences).",
        )
        generation: GenerationSettings = Field(
            default_factory=GenerationSettings, description="Decoding settings for the sample answers."
        )
        behaviour_checks: str | None = Field(
            None,
            description="JSON Lines file of held-out prompts, each with what a passing answer must contain "
            "(any_of, all_of, none_of, regex); both models answer them greedily and the pass rate is reported.",
        )
        compare_with_base: bool = Field(
            True,
            description="Also evaluate the base model (the starting point of training) and report both side by side.",
        )
        thresholds: Thresholds = Field(default_factory=Thresholds, description="Limits that decide PASS or FAIL.")
        on_fail: Literal["stop", "continue"] = Field(
            "stop", description="On FAIL: 'stop' skips the export and exits with code 3; 'continue' only reports."
        )

        @model_validator(mode="after")
        def check_thresholds_are_measurable(self):
            for name in ("improvement_min", "reward_accuracy_min"):
                if getattr(self.thresholds, name) is not None and not self.compare_with_base:
                    raise ValueError(
                        f"thresholds.{name} needs compare_with_base: true (it compares with the base model)"
                    )
            needs = {
                "perplexity_max": "perplexity",
                "loss_max": "loss",
                "improvement_min": "loss",
                "bleu_min": "bleu",
                "rouge_l_min": "rouge",
                "exact_match_min": "exact_match",
            }
            missing = [
                f"thresholds.{name} needs '{metric}' in metrics"
                for name, metric in needs.items()
                if getattr(self.thresholds, name) is not None and metric not in self.metrics
            ]
            if self.thresholds.behaviour_min is not None and not self.behaviour_checks:
                missing.append("thresholds.behaviour_min needs behaviour_checks (the file of held-out prompts)")
            if missing:
                raise ValueError("; ".join(missing))
            return self

    def check_workflow(self, plugins) -> list[Finding]:
        task = _task_of_workflow(plugins)
        return task_findings(self.config, task) if task else []

    async def initialize(self, context) -> None:
        """A bad checks file fails the run before training, not after it."""
        if self.config.behaviour_checks:
            from plugins.eval.behaviour import load_checks

            load_checks(self.config.behaviour_checks)

    async def _execute_impl(self, context) -> str:
        tokenized = context.recall(keys.DATASET_TOKENIZED) or {}
        findings = task_findings(self.config, tokenized.get("task", "sft"))
        errors = [Problem(f.message, path=f.key) for f in findings if f.error]
        if errors:
            raise ConfigError(errors)
        for finding in findings:
            context.log(finding.message)
        evaluation = _Evaluation(
            self.config,
            context,
            result=context.recall(keys.TRAINING_RESULT),
            tokenized=tokenized,
            validation=read_conversations(context.recall(keys.DATASET_VALIDATION)),
            training_config=context.recall(keys.TRAINING_CONFIG),
        )
        report = await asyncio.to_thread(evaluation.run)
        context.remember(keys.EVALUATION_REPORT, report)
        context.summarize("evaluation", report["status"])
        tuned = report["metrics"]["fine_tuned"]
        if tuned.get("perplexity") is not None:
            context.summarize("eval_perplexity", tuned["perplexity"])
        if tuned.get("preference_accuracy") is not None:
            context.summarize("eval_preference_accuracy", tuned["preference_accuracy"])
        if report["behaviour"]:
            context.summarize("behaviour_pass_rate", report["behaviour"]["pass_rate"])
        if report["status"] == "FAIL":
            message = "evaluation FAILED: " + "; ".join(report["failures"])
            if self.config.on_fail == "stop":
                raise ReviewFailed(message + ". The export was skipped (set on_fail: continue to export anyway).")
            context.warn(message)
        if report["preference"]:
            shown = _preference_line(tuned, report["metrics"]["base"], report["preference"]["vs_start"])
        else:
            shown = ", ".join(f"{k} {_short(v)}" for k, v in tuned.items() if v is not None and k != BEHAVIOUR_METRIC)
        return f"{report['status']}: {shown}" + _behaviour_line(report["behaviour"])


BEHAVIOUR_METRIC = "behaviour_pass_rate"
DATA_OF_TASK = {
    "sft": "supervised (SFT) conversations",
    "preference": "preference pairs",
    "unpaired": "KTO completions labelled desirable or not",
}


def task_findings(config: Any, task: str) -> list[Finding]:
    """What the settings say about data of ``task``: thresholds that cannot be measured on it
    (errors), and the SFT ``metrics`` set explicitly for preference data (ignored, announced)."""
    thresholds = config.thresholds
    wrong = SFT_THRESHOLDS if task != "sft" else PREFERENCE_THRESHOLDS
    scores = "preference data (preference_accuracy_min, preference_margin_min)" if task == "sft" else "supervised data"
    findings = [
        Finding(
            f"thresholds.{name} applies to {scores}, but the training data holds {DATA_OF_TASK.get(task, task)}. "
            "Remove it, or use "
            + (
                ", ".join(PREFERENCE_THRESHOLDS)
                if task != "sft"
                else "the SFT thresholds (loss_max, perplexity_max...)"
            )
            + " or behaviour_min.",
            key=f"thresholds.{name}",
            error=True,
        )
        for name in wrong
        if getattr(thresholds, name) is not None
    ]
    if task == "unpaired" and thresholds.preference_accuracy_min is not None:
        findings.append(
            Finding(
                "thresholds.preference_accuracy_min ranks the two answers of a pair, and KTO completions come one "
                "at a time: use reward_accuracy_min (the share that moved from the starting model the way their "
                "label asks) or preference_margin_min.",
                key="thresholds.preference_accuracy_min",
                error=True,
            )
        )
    if task != "sft" and "metrics" in config.model_fields_set:
        findings.append(
            Finding(
                f"metrics ({', '.join(config.metrics)}) score supervised data and are ignored for preference data: "
                "evaluation reports preference accuracy and margins instead.",
                key="metrics",
            )
        )
    return findings


def _task_of_workflow(plugins) -> str | None:
    """The kind of data the workflow's training step takes, when it says (None: unknown until THINK)."""
    from plugins.training.preference.losses import TASK_OF_LOSS

    for plugin in plugins:
        if plugin.plugin_name() == "fine_tuning":
            return "sft"
        if plugin.plugin_name() == "preference_training":
            return TASK_OF_LOSS[plugin.config.loss]
    return None


@dataclass(frozen=True)
class _Measured:
    """What one model scored: metric values, the sample answers, the behavioural answers and verdicts."""

    values: dict[str, Any]
    answers: list
    behaviour: list[dict[str, Any]]
    scores: Any = None  # preference data: the answers' log-probabilities (plugins.eval.preference.SequenceScores)


class _Evaluation:
    """One evaluation run (blocking; runs in a worker thread)."""

    def __init__(
        self,
        config: Any,
        context: Any,
        *,
        result: dict[str, Any],
        tokenized: dict[str, Any],
        validation: list[dict[str, Any]],
        training_config: dict[str, Any] | None,
    ):
        self.config = config
        self.context = context  # progress and cancellation only: the plugin reads memory and passes the values
        self.result = result
        self.tokenized = tokenized
        self.validation = validation
        self.training_config = training_config
        self.task = tokenized.get("task", "sft")

    def run(self) -> dict[str, Any]:
        from plugins.eval.behaviour import load_checks
        from plugins.eval.loading import is_adapter_folder, load_saved_tokenizer
        from plugins.eval.prompts import render_chat_prompt

        started = time.perf_counter()
        final_dir = Path(self.result["final_model_path"])
        self.tokenizer = load_saved_tokenizer(final_dir)
        self.chat_template = self.tokenized.get("chat_template") or self.tokenizer.chat_template
        conversations, rows_path, source = self._evaluation_data()
        self.rows = _load_rows(rows_path, self.task)
        self.prompts = self._prompts(conversations)
        self.checks = load_checks(self.config.behaviour_checks) if self.config.behaviour_checks else []
        self.check_prompts = [render_chat_prompt(c.messages(), self.tokenizer, self.chat_template) for c in self.checks]
        model = self._load(final_dir)
        tuned_run = self._measure(model, "fine-tuned")
        base_run = None
        if self.config.compare_with_base:
            if is_adapter_folder(final_dir):
                with model.disable_adapter():
                    base_run = self._measure(model, "base")
            else:
                del model
                base_run = self._measure(self._load(Path(self.result["base_model"]), base=True), "base")
        tuned, base = tuned_run.values, base_run.values if base_run else None
        tuned_answers, base_answers = tuned_run.answers, base_run.answers if base_run else None
        preference = self._preference_report(tuned_run, base_run)
        checks = _check_thresholds(self.config.thresholds, tuned, base, preference)
        failures = [c["message"] for c in checks if not c["passed"]]
        return {
            "status": "FAIL" if failures else "PASS",
            "task": self.task,
            "failures": failures,
            "thresholds": checks,
            "metrics": {"fine_tuned": tuned, "base": base},
            "improvement": _improvement(tuned, base),
            "samples": [
                {
                    "prompt": p.messages[-1]["content"],
                    "messages": p.messages,
                    "reference": p.reference,
                    "fine_tuned": tuned_answers[i].text if tuned_answers else None,
                    "base": base_answers[i].text if base_answers else None,
                }
                for i, p in enumerate(self.prompts)
            ],
            "behaviour": self._behaviour_report(tuned_run, base_run),
            "preference": preference,
            "generation": self.config.generation.model_dump(),
            "eval_source": source,
            "eval_rows": min(len(self.rows), self.config.max_eval_rows or len(self.rows))
            if self.rows is not None
            else 0,
            "seconds": round(time.perf_counter() - started, 2),
        }

    def _evaluation_data(self) -> tuple[list[dict[str, Any]], str | None, str]:
        if self.config.eval_dataset_path:
            return self._tokenize_file(self.config.eval_dataset_path)
        conversations = self.validation
        rows_path = self.tokenized.get("validation")
        if not conversations and not rows_path:
            raise InputError(
                Problem(
                    "there is no evaluation data: the dataset has no validation split. Set validation_split in "
                    "dataset_loader, or eval_dataset_path in evaluation.",
                    path="eval_dataset_path",
                )
            )
        return conversations, rows_path, "validation split"

    def _tokenize_file(self, path: str) -> tuple[list[dict[str, Any]], str | None, str]:
        from plugins.data.dataset import load_conversations
        from plugins.data.preparation import PreparationOptions, prepare_tokenized
        from plugins.utils import cache_root

        if not Path(path).exists():
            raise InputError(Problem(f"eval_dataset_path {path!r} does not exist.", path="eval_dataset_path"))
        conversations = load_conversations([path]).conversations
        options = PreparationOptions(
            max_seq_length=int(self.tokenized.get("max_seq_length") or 1024),
            chat_template=self.chat_template,
            train_on=self.tokenized.get("train_on", "assistant"),
            packing=bool(self.tokenized.get("packing", True)),
        )
        prepared = prepare_tokenized(conversations, None, self.tokenizer, options, cache_dir=cache_root() / "tokenized")
        if prepared.tokenized["task"] != self.task:
            raise ConfigError(
                Problem(
                    f"eval_dataset_path {path!r} holds {DATA_OF_TASK.get(prepared.tokenized['task'])}, but the model "
                    f"was trained on {DATA_OF_TASK.get(self.task)}: give evaluation data of the same kind.",
                    path="eval_dataset_path",
                )
            )
        return conversations, prepared.tokenized["train"], path

    def _prompts(self, conversations: list[dict[str, Any]]):
        from plugins.eval.prompts import chat_prompts

        if not self.config.num_samples:
            return []
        if self.task != "sft":
            from plugins.eval.preference import preference_prompts

            return preference_prompts(conversations, self.tokenizer, self.chat_template, self.config.num_samples)
        prompts = chat_prompts(conversations, self.tokenizer, self.chat_template, self.config.num_samples)
        return [p for p in prompts if p.reference]  # a sample needs a reference answer to score

    def _behaviour_report(self, tuned: _Measured, base: _Measured | None) -> dict[str, Any] | None:
        if not self.checks:
            return None
        return {
            "checks_file": self.config.behaviour_checks,
            "max_new_tokens": self.config.generation.max_new_tokens,
            "pass_rate": tuned.values[BEHAVIOUR_METRIC],
            "base_pass_rate": base.values[BEHAVIOUR_METRIC] if base else None,
            "prompts": [
                {
                    "check": check.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
                    "fine_tuned": tuned.behaviour[i],
                    "base": base.behaviour[i] if base else None,
                }
                for i, check in enumerate(self.checks)
            ],
        }

    def _preference_report(self, tuned: _Measured, start: _Measured | None) -> dict[str, Any] | None:
        """The tuned model against its start on preference data (``plugins.eval.preference``)."""
        if tuned.scores is None:
            return None
        from plugins.eval.preference import DEFAULT_BETA, reward_figures
        from plugins.training.preference.losses import needs_reference

        loss = self.result.get("loss")
        # Only DPO, IPO and KTO train with beta as the weight of this log-ratio; others get DPO's usual 0.1.
        beta = float(self.result.get("beta") or DEFAULT_BETA) if loss and needs_reference(loss) else DEFAULT_BETA
        return {
            "task": self.task,
            "examples": int(tuned.scores.sums.shape[0]),
            "measure": "log-probability of the answer tokens: mean per token (headline), and summed (*_summed)",
            "loss": loss,
            "vs_start": reward_figures(tuned.scores, start.scores, beta)
            if start and start.scores is not None
            else None,
        }

    def _load(self, folder: Path, base: bool = False):
        import torch

        from plugins.eval.loading import load_trained_model
        from plugins.models.loaders import user_model_options

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        permissions = user_model_options(self.training_config)
        if base:
            from plugins.models import load_causal_lm

            return load_causal_lm(str(folder), dtype=dtype, device_map=device, **permissions).eval()
        return load_trained_model(
            folder, base_model=self.result.get("base_model"), dtype=dtype, device=device, permissions=permissions
        )

    def _measure(self, model: Any, label: str) -> _Measured:
        from plugins.data.collator import PackedCollator
        from plugins.eval import metrics as m
        from plugins.eval.behaviour import judged, pass_rate

        wanted = set(self.config.metrics) if self.task == "sft" else set()  # SFT metrics only
        values: dict[str, Any] = {}
        scores = None
        if self.task != "sft" and self.rows is not None:
            from plugins.eval.preference import model_figures, score_sequences

            scores = score_sequences(
                model,
                self.rows,
                pad_token_id=self.tokenizer.pad_token_id,
                batch_size=self.config.batch_size,
                max_examples=self.config.max_eval_rows,
                on_batch=lambda done, total: self.context.progress(f"answer log-probabilities ({label})", done, total),
            )
            values |= model_figures(scores)
        if wanted & {"loss", "perplexity"} and self.rows is not None:
            loss, tokens = m.token_loss(
                model,
                self.rows,
                PackedCollator(pad_token_id=self.tokenizer.pad_token_id),
                batch_size=self.config.batch_size,
                max_rows=self.config.max_eval_rows,
                on_batch=lambda done, total: self.context.progress(f"eval loss ({label})", done, total),
            )
            values["loss"] = loss
            values["perplexity"] = m.perplexity(loss)
            values["eval_tokens"] = tokens
        settings = self.config.generation.model_dump()
        answers = self._answer(model, self.prompts, settings, f"generate ({label})")
        if answers:
            predictions, references = [a.text for a in answers], [p.reference for p in self.prompts]
            if "bleu" in wanted:
                values["bleu"] = m.bleu(predictions, references)
            if "rouge" in wanted:
                values |= m.rouge(predictions, references)
            if "exact_match" in wanted:
                values["exact_match"] = m.exact_match(predictions, references)
        greedy = settings | {"do_sample": False}
        answers_to_checks = self._answer(model, self.check_prompts, greedy, f"behaviour ({label})")
        behaviour = [judged(c, a.text) for c, a in zip(self.checks, answers_to_checks, strict=True)]
        if behaviour:
            values[BEHAVIOUR_METRIC] = pass_rate([row["passed"] for row in behaviour])
        return _Measured(values, answers, behaviour, scores)

    def _answer(self, model: Any, prompts: list, settings: dict[str, Any], task: str) -> list:
        from plugins.eval.generation import generate_many, stop_token_ids

        if not prompts:
            return []
        stops = stop_token_ids(self.tokenizer, self.chat_template)

        def progress(done: int, total: int) -> None:
            self.context.progress(task, done, total)
            self.context.check_cancelled()

        return generate_many(model, self.tokenizer, [p.text for p in prompts], settings, stops, on_batch=progress)


def _load_rows(path: str | None, task: str):
    if not path:
        return None
    if task != "sft":
        from plugins.data.preference_tokenized import load_preference_split

        return load_preference_split(path)
    from plugins.data.tokenized import load_tokenized

    return load_tokenized(path)


def _improvement(tuned: dict[str, Any], base: dict[str, Any] | None) -> dict[str, float]:
    if not base or not base.get("loss") or tuned.get("loss") is None:
        return {}
    return {"loss_reduction": (base["loss"] - tuned["loss"]) / base["loss"]}


def _check_thresholds(
    thresholds: Any, tuned: dict[str, Any], base: dict[str, Any] | None, preference: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    improvement = _improvement(tuned, base).get("loss_reduction")
    # KTO completions have no pairs to rank: their accuracy is the share that moved the way their label asks.
    vs_start = (preference or {}).get("vs_start") or {}
    # KTO completions have no pairs: the share that moved the way their label asks is their reward accuracy.
    reward_accuracy = vs_start.get("reward_accuracy", vs_start.get("moved_right"))
    specs = [
        ("perplexity_max", tuned.get("perplexity"), "max", "perplexity"),
        ("loss_max", tuned.get("loss"), "max", "eval loss"),
        ("improvement_min", improvement, "min", "loss reduction over the base model"),
        ("bleu_min", tuned.get("bleu"), "min", "BLEU"),
        ("rouge_l_min", tuned.get("rougeL"), "min", "ROUGE-L"),
        ("exact_match_min", tuned.get("exact_match"), "min", "exact match"),
        ("behaviour_min", tuned.get(BEHAVIOUR_METRIC), "min", "behavioural pass rate"),
        ("preference_accuracy_min", tuned.get("preference_accuracy"), "min", "preference accuracy"),
        ("preference_margin_min", tuned.get("preference_margin"), "min", "preference margin"),
        ("reward_accuracy_min", reward_accuracy, "min", "share moved the right way from the start"),
    ]
    checks = []
    for name, value, kind, label in specs:
        limit = getattr(thresholds, name)
        if limit is None:
            continue
        if value is None or value != value:  # not measured, or NaN
            checks.append(
                {
                    "name": name,
                    "limit": limit,
                    "value": None,
                    "passed": False,
                    "message": f"{label} could not be measured for {name}",
                }
            )
            continue
        passed = value <= limit if kind == "max" else value >= limit
        gap = value - limit if kind == "max" else limit - value
        relation = "above the maximum" if kind == "max" else "below the minimum"
        message = f"{label} {_short(value)} is {relation} {name}={_short(limit)} by {_short(gap)}"
        if limit:
            message += f" ({abs(gap / limit):.1%})"
        checks.append(
            {
                "name": name,
                "limit": limit,
                "value": value,
                "passed": passed,
                "message": message if not passed else f"{label} {_short(value)} within {name}={_short(limit)}",
            }
        )
    return checks


def _preference_line(tuned: dict[str, Any], start: dict[str, Any] | None, vs_start: dict[str, Any] | None) -> str:
    """The headline figures of preference data: first how the training moved the model against its
    start (reward accuracy, what DPO optimises), then the model's own ranking, tuned (start), e.g.
    ``reward accuracy vs start 100%, chosen more likely per token 42% (start 8%), ...``."""
    start = start or {}
    shown = [
        f"{label} {vs_start[name]:.0%}"
        for name, label in (("reward_accuracy", "reward accuracy vs start"), ("moved_right", "moved as labelled"))
        if (vs_start or {}).get(name) is not None
    ]
    shown += [
        f"{label} {format(tuned[name], spec)}"
        + (f" (start {format(start[name], spec)})" if start.get(name) is not None else "")
        for name, label, spec in (
            ("preference_accuracy", "chosen more likely per token", ".0%"),
            ("preference_margin", "margin per answer token", ".3g"),
        )
        if tuned.get(name) is not None
    ]
    return ", ".join(shown)


def _behaviour_line(behaviour: dict[str, Any] | None) -> str:
    if not behaviour:
        return ""
    base = behaviour["base_pass_rate"]
    return f"; behaviour checks passed: {behaviour['pass_rate']:.0%}" + (
        f" (base {base:.0%})" if base is not None else ""
    )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
