"""DataPreparationPlugin (THINK): chat template, tokenization, label masking, packing, cache.

Features: a weighted mixture of the loader's sources in the training split (by trained tokens or
rows, ``plugins.data.mixed_encoding``; the realised shares go to ``dataset.token_stats["mixture"]``);
labels from the template itself (assistant turns, the last one, or everything; for
preference data, each answer after its prompt, never packed, ``dataset.tokenized["task"]``);
best-fit packing with per-sample positions; a verified on-disk cache keyed by the data, the
tokenizer, the template and every option (the key is printed; ``rebuild_cache`` forces a rebuild).
With a streamed dataset (``dataset.stream``), only the head rows and the validation rows are
tokenized here; ``dataset.tokenized["stream"]`` tells DO to read the rest.

Raises:
    ConfigError: an unknown or uncompilable chat template, a tokenizer without one.
    InputError: a conversation the template cannot render; no trainable sample left.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from entity_training import InputError, Plugin, PluginConfig, Problem, Stage
from plugins import memory_keys
from plugins.data.conversation_files import read_conversations
from plugins.data.preparation import PreparationOptions, PreparedData, prepare_tokenized, streamed
from plugins.data.tokenizer_identity import TokenizerFiles, source_files
from plugins.utils import cache_root


class DataPreparationPlugin(Plugin):
    name = "data_preparation"
    description = "Render, tokenize, mask and pack the conversations; cache the result on disk."
    supported_stages = (Stage.THINK,)
    dependencies = (memory_keys.DATASET_TRAIN, memory_keys.TRAINING_CONFIG)
    # dataset.stats: the loader's mixture of sources, when it has several (its "mixture" entry);
    # dataset.stream: with streaming, the files DO reads (only the head rows are prepared here)
    optional_dependencies = (memory_keys.DATASET_VALIDATION, memory_keys.DATASET_STATS, memory_keys.DATASET_STREAM)
    provides = (memory_keys.DATASET_TOKENIZED, memory_keys.DATASET_TOKEN_STATS)

    class ConfigModel(PluginConfig):
        max_seq_length: int = Field(
            1024, gt=1, description="Longest row in tokens; longer samples are truncated or dropped."
        )
        chat_template: str = Field(
            "tokenizer",
            min_length=1,
            description="'tokenizer' (its own template), a built-in name (chatml, llama3, alpaca), or inline Jinja.",
        )
        train_on: Literal["assistant", "last_assistant", "all"] = Field(
            "assistant", description="Which tokens are trained: every assistant turn, only the last one, or all tokens."
        )
        packing: bool = Field(True, description="Pack several samples per row (attention stays within each sample).")
        truncation: Literal["right", "drop"] = Field(
            "right", description="Samples longer than max_seq_length: cut at the end (right) or leave out (drop)."
        )
        cache_dir: str | None = Field(
            None, description="Where tokenized datasets are cached; default $ENTITY_TRAINING_CACHE/tokenized."
        )
        rebuild_cache: bool = Field(False, description="Tokenize again even when an intact cache entry exists.")
        cache_max_entries: int | None = Field(
            20,
            ge=1,
            description="Tokenized datasets kept in cache_dir: after writing one, the least recently used beyond "
            "this many are removed (never one a running process uses). null keeps them all.",
        )
        num_proc: int = Field(
            1, ge=1, description="Worker processes for tokenizing; worth it from ~10k conversations on several cores."
        )
        tokenizer: str | None = Field(
            None, description="Tokenizer to use; default: the model_name_or_path of training.config."
        )

    async def _execute_impl(self, context: Any) -> str:
        training = context.recall(memory_keys.TRAINING_CONFIG)
        tokenizer_name = self.config.tokenizer or (training.model_name_or_path if training else None)
        if not tokenizer_name:
            raise InputError(
                Problem("no tokenizer: set data_preparation.tokenizer or model_name_or_path in training_config.")
            )
        tokenizer, tokenizer_files = await asyncio.to_thread(
            load_tokenizer_for, tokenizer_name, trust_remote_code=bool(training and training.trust_remote_code)
        )
        options = PreparationOptions(
            max_seq_length=self.config.max_seq_length,
            chat_template=self.config.chat_template,
            train_on=self.config.train_on,
            packing=self.config.packing,
            truncation=self.config.truncation,
        )

        def report(task: str, done: int, total: int) -> None:
            context.check_cancelled()
            context.progress(task, done, total)

        train = await asyncio.to_thread(read_conversations, context.recall(memory_keys.DATASET_TRAIN))
        validation = await asyncio.to_thread(read_conversations, context.recall(memory_keys.DATASET_VALIDATION))
        prepared: PreparedData = await asyncio.to_thread(
            prepare_tokenized,
            train,
            validation,
            tokenizer,
            options,
            cache_dir=self._cache_dir(),
            rebuild=self.config.rebuild_cache,
            num_proc=self.config.num_proc,
            on_progress=report,
            tokenizer_files=tokenizer_files,
            max_entries=self.config.cache_max_entries,
            mixture=(context.recall(memory_keys.DATASET_STATS) or {}).get("mixture"),
        )
        self._report(context, prepared)
        stream = context.recall(memory_keys.DATASET_STREAM)
        if stream is not None:
            prepared = streamed(prepared, stream, truncation=self.config.truncation)
        context.remember(memory_keys.DATASET_TOKENIZED, prepared.tokenized)
        context.remember(memory_keys.DATASET_TOKEN_STATS, prepared.stats)
        context.summarize("packing_efficiency", prepared.stats["packing_efficiency"])
        context.summarize("tokenized_cache_key", prepared.stats["cache_key"])
        stats = prepared.stats
        origin = "cache hit" if prepared.cache_hit else "tokenized"
        if stream is not None:
            return (
                f"streaming: rows are tokenized and packed during training; the {stats['train']['samples']} head "
                f"samples checked here give {stats['tokens']:,} tokens ({stats['trained_tokens']:,} trained), "
                f"{origin} {stats['cache_key']}"
            )
        if stats["task"] != "sft":
            return (
                f"{stats['train']['samples']} {stats['task']} examples -> {stats['train']['sequences']} sequences "
                f"(not packed), {stats['tokens']:,} tokens ({stats['trained_tokens']:,} trained, answers only), "
                f"{stats['truncated_samples']} truncated, {origin} {stats['cache_key']}"
            )
        return (
            f"{stats['train']['samples']} samples -> {stats['train']['rows']} rows, {stats['tokens']:,} tokens "
            f"({stats['trained_tokens']:,} trained), packing {stats['packing_efficiency']:.1%}, "
            f"{origin} {stats['cache_key']}"
        )

    def _cache_dir(self) -> Path:
        return Path(self.config.cache_dir).expanduser() if self.config.cache_dir else cache_root() / "tokenized"

    @staticmethod
    def _report(context: Any, prepared: PreparedData) -> None:
        stats = prepared.stats
        if prepared.stale_reason == "rebuild_cache is set":
            context.log(f"cache entry {stats['cache_key']} rebuilt (rebuild_cache is set)")
        elif prepared.stale_reason:
            context.warn(f"cache entry {stats['cache_key']} was stale and is rebuilt: {prepared.stale_reason}")
        context.log(f"cache key {stats['cache_key']} ({'hit' if prepared.cache_hit else 'miss, written'})")
        if prepared.pruned:
            freed = sum(removed.bytes for removed in prepared.pruned) / 2**20
            keys = ", ".join(removed.key for removed in prepared.pruned)
            context.log(
                f"cache: removed {len(prepared.pruned)} least recently used entries ({freed:.1f} MiB) to keep "
                f"cache_max_entries: {keys}"
            )
        for split in ("train", "validation"):
            split_stats = stats[split] or {}
            if split_stats.get("truncated_samples"):
                cut = "the start of their prompt, then the end of their answers" if stats["task"] != "sft" else ""
                context.warn(
                    f"{split}: {split_stats['truncated_samples']} samples cut at max_seq_length"
                    + (f" ({cut})" if cut else "")
                )
            dropped = split_stats.get("dropped_too_long", 0) + split_stats.get("dropped_untrained", 0)
            if dropped:
                context.warn(
                    f"{split}: dropped {split_stats['dropped_too_long']} samples longer than max_seq_length and "
                    f"{split_stats['dropped_untrained']} left without any trained token"
                )
        for name, share in (stats.get("mixture") or {}).get("sources", {}).items():
            context.log(
                f"source {name}: {share['rows']} samples ({share['passes']:g} x its {share['available_rows']}), "
                f"{share['share_rows']:.1%} of the rows and {share['share_tokens']:.1%} of the trained tokens "
                f"(target {share['target_share']:.1%} of the {stats['mixture']['mix_by']})"
            )
        if not stats["train"]["samples"]:
            raise InputError(
                Problem(
                    "no training sample has a trained token left after tokenization and truncation. "
                    "Raise max_seq_length, use truncation: right, or check train_on."
                )
            )


def load_tokenizer_for(name_or_path: str, *, trust_remote_code: bool = False) -> tuple[Any, TokenizerFiles | None]:
    """The tokenizer, and the files it was loaded from (None with remote code: it may read other files)."""
    from plugins.models import load_tokenizer

    started = time.time_ns()
    tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    return tokenizer, None if trust_remote_code else source_files(tokenizer, started)
