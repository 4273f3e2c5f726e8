"""InferenceTestPlugin (OUTPUT, after model_export): load each exported model, answer the sample
prompts, measure load time, tokens/s and peak memory against the base model.

When the evaluation ran behavioural checks (``evaluation.report``, read if present), each model
also answers those held-out prompts greedily: its pass rate, and how often its answers agree with
the fine-tuned model's answers in the evaluation (identical, or the same first words). GGUF files
answer through the chat template stored in the file, as a llama.cpp user would run them.

The table lands in ``inference.report`` (and the run report). GGUF files run through
llama-cpp-python when it is installed and are skipped with a note otherwise.

Raises:
    PluginError: an exported model fails to load or generate.
"""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from entity_training import PluginConfig, Stage, ToolPlugin, tool
from plugins import memory_keys as keys

TestedFormat = Literal["huggingface", "merged", "safetensors", "gguf"]


class InferenceTestPlugin(ToolPlugin):
    name = "inference_test"
    description = "Run the exported models on sample prompts; tokens/s and peak memory vs the base model."
    supported_stages = (Stage.OUTPUT,)
    dependencies = (keys.EXPORT_PATHS, keys.TRAINING_RESULT)
    optional_dependencies = (
        keys.TRAINING_CONFIG,
        keys.DATASET_TOKENIZED,
        keys.DATASET_TRAIN,
        keys.DATASET_VALIDATION,
        keys.EVALUATION_REPORT,
    )
    provides = (keys.INFERENCE_REPORT,)

    class ConfigModel(PluginConfig):
        prompts: list[str] | None = Field(
            None, description="User messages to answer; default: prompts from the validation split (or built-in ones)."
        )
        num_prompts: int = Field(4, ge=1, le=100, description="How many prompts each model answers.")
        max_new_tokens: int = Field(32, gt=0, le=4096, description="Most tokens generated per answer.")
        include_base: bool = Field(True, description="Also measure the base model, for comparison.")
        formats: list[TestedFormat] | None = Field(
            None, description="Exported formats to test; default: every exported one (GGUF: each quantization)."
        )
        agreement_words: int = Field(
            8,
            ge=1,
            le=1000,
            description="Behavioural checks: besides identical answers, count an answer as agreeing with the "
            "fine-tuned model's when its first this many words are the same.",
        )

    async def _execute_impl(self, context) -> str:
        report = await asyncio.to_thread(self._run, context)
        context.remember(keys.INFERENCE_REPORT, report)
        fastest = max(report["models"], key=lambda r: r["tokens_per_second"], default=None)
        behaviour = ", ".join(
            f"{r['name']} {r['behaviour']['pass_rate']:.0%}" for r in report["models"] if r.get("behaviour")
        )
        return (
            f"tested {len(report['models'])} models"
            + (f"; fastest {fastest['name']} at {fastest['tokens_per_second']} tokens/s" if fastest else "")
            + (f"; behaviour checks passed: {behaviour}" if behaviour else "")
        )

    def _run(self, context) -> dict[str, Any]:
        from plugins.data.conversation_files import validation_or_train
        from plugins.eval.benchmark import benchmark
        from plugins.eval.loading import load_saved_tokenizer
        from plugins.eval.prompts import chat_prompts
        from plugins.models.loaders import user_model_options

        result = context.recall(keys.TRAINING_RESULT)
        permissions = user_model_options(context.recall(keys.TRAINING_CONFIG))
        tokenizer = load_saved_tokenizer(result["final_model_path"])
        template = (context.recall(keys.DATASET_TOKENIZED) or {}).get("chat_template")
        if self.config.prompts:
            conversations = [
                {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "-"}]}
                for p in self.config.prompts
            ]
        else:  # held-out conversations when there are some; the split files are read only then
            conversations = validation_or_train(
                context.recall(keys.DATASET_VALIDATION), context.recall(keys.DATASET_TRAIN)
            )
        prompts = [p.text for p in chat_prompts(conversations, tokenizer, template, self.config.num_prompts)]
        behaviour = _BehaviourPrompts.from_evaluation(context.recall(keys.EVALUATION_REPORT), tokenizer, template)
        results, skipped = [], []
        for name, path in self._targets(context.recall(keys.EXPORT_PATHS) or {}, result, skipped):
            context.check_cancelled()
            context.log(f"inference test: {name}")
            row = benchmark(
                name,
                path,
                prompts,
                max_new_tokens=self.config.max_new_tokens,
                base_model=result.get("base_model"),
                permissions=permissions,
                # The evaluation already scored the base model on these prompts.
                chat_prompts=behaviour.prompts if behaviour and name != "base" else (),
                chat_max_new_tokens=behaviour.max_new_tokens if behaviour else 0,
            ).to_dict()
            answers, chat_template = row.pop("chat_answers"), row.pop("chat_template")
            row["behaviour"] = (
                behaviour.score(answers, self.config.agreement_words) | {"chat_template": chat_template}
                if behaviour and answers
                else None
            )
            results.append(row)
        base = next((r for r in results if r["name"] == "base"), None)
        for row in results:
            if base and base["tokens_per_second"]:
                row["speed_vs_base"] = round(row["tokens_per_second"] / base["tokens_per_second"], 3)
            if base and base["peak_memory_bytes"]:
                row["memory_vs_base"] = round(row["peak_memory_bytes"] / base["peak_memory_bytes"], 3)
        return {
            "prompts": prompts,
            "max_new_tokens": self.config.max_new_tokens,
            "models": results,
            "skipped": skipped,
            "behaviour": behaviour.settings(self.config.agreement_words) if behaviour else None,
        }

    def _targets(self, paths: dict[str, Any], result: dict[str, Any], skipped: list[str]) -> list[tuple[str, str]]:
        wanted = self.config.formats or ["huggingface", "merged", "safetensors", "gguf"]
        targets = [("base", str(result["base_model"]))] if self.config.include_base else []
        for fmt in wanted:
            if fmt not in paths:
                continue
            if fmt == "gguf":
                if importlib.util.find_spec("llama_cpp") is None:
                    skipped.append("gguf: llama-cpp-python is not installed (pip install 'entity-training[gguf]')")
                    continue
                targets += [(f"gguf {quant}", path) for quant, path in paths["gguf"].items()]
            elif fmt == "safetensors":
                targets.append((fmt, str(Path(paths[fmt]).parent)))
            else:
                targets.append((fmt, paths[fmt]))
        return targets

    # -- tools ---------------------------------------------------------------------------------
    @tool("benchmark")
    def benchmark(
        self, paths: list[str], messages: list[str], max_new_tokens: int = 32, base_model: str | None = None
    ) -> dict[str, Any]:
        """Load time, greedy tokens/s and peak memory of model folders, adapter folders or .gguf files."""
        from plugins.eval.benchmark import benchmark_artefacts

        return benchmark_artefacts(paths, messages, max_new_tokens=max_new_tokens, base_model=base_model)


@dataclass(frozen=True)
class _BehaviourPrompts:
    """The evaluation's behavioural checks, and the fine-tuned model's answers to compare with."""

    checks: list[Any]
    prompts: list[Any]
    reference_answers: list[str]
    max_new_tokens: int

    @classmethod
    def from_evaluation(cls, report: dict[str, Any] | None, tokenizer: Any, template: str | None):
        from plugins.eval.behaviour import BehaviourCheck
        from plugins.eval.prompts import render_chat_prompt

        behaviour = (report or {}).get("behaviour")
        if not behaviour:
            return None
        rows = behaviour["prompts"]
        checks = [BehaviourCheck.model_validate(row["check"]) for row in rows]
        return cls(
            checks=checks,
            prompts=[render_chat_prompt(c.messages(), tokenizer, template) for c in checks],
            reference_answers=[row["fine_tuned"]["answer"] for row in rows],
            max_new_tokens=int(behaviour["max_new_tokens"]),
        )

    def score(self, answers: list[str], agreement_words: int) -> dict[str, Any]:
        from plugins.eval.behaviour import judged, pass_rate
        from plugins.eval.metrics import first_words_rate, identical_rate

        rows = [judged(check, answer) for check, answer in zip(self.checks, answers, strict=True)]
        return {
            "pass_rate": pass_rate([row["passed"] for row in rows]),
            "identical_rate": identical_rate(answers, self.reference_answers),
            "first_words_rate": first_words_rate(answers, self.reference_answers, agreement_words),
            "answers": rows,
        }

    def settings(self, agreement_words: int) -> dict[str, Any]:
        return {
            "checks": len(self.checks),
            "prompts": [c.prompt for c in self.checks],
            "max_new_tokens": self.max_new_tokens,
            "agreement_words": agreement_words,
        }
