"""DatasetLoaderPlugin (INPUT): read dataset files into validated conversations and split them.

Features: .jsonl/.json/.parquet/.csv/.txt files, ``save_to_disk`` folders, globs of shards and Hub
datasets (``hf://``); several weighted ``sources`` (``plugins.data.sources``), split one by one and
mixed later by ``data_preparation``; format detection
(alpaca, sharegpt, openai, prompt_completion, text; preference pairs and KTO rows, see
``plugins.data.preference_formats``) per file, with the reason; one task per dataset; row validation
with file and line; a reproducible train/validation split, written to ``<run_dir>/data/``
(memory holds each split's file entry, see ``plugins.data.conversation_files``); statistics.
With ``streaming: true`` (``plugins.data.stream_input``): the head of each JSON Lines file is checked
and the stream described under ``dataset.stream`` instead; DO reads the rest (docs/DATA.md).

Raises:
    InputError: a missing or unreadable file, a glob or source that matches no file, a Hub dataset
        that cannot be had (offline and not cached), invalid JSON, bad rows (policy ``error``), an empty
        dataset after filtering, files of different tasks, KTO data with a single label value.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from entity_training import Finding, Plugin, PluginConfig, Stage
from plugins import memory_keys
from plugins.data.conversation_files import write_conversations
from plugins.data.dataset import (
    ConversationDataset,
    check_kto_labels,
    check_one_task,
    load_conversations,
    split_conversations,
)
from plugins.data.mixture import MixUnit
from plugins.data.sources import (
    DataSource,
    FieldMapSetting,
    FormatSetting,
    LoadedSource,
    MaxSamplesSetting,
    duplicate_names,
    load_sources,
    mixture_spec,
    shuffled,
    source_statistics,
)
from plugins.utils import cache_root


class DatasetLoaderPlugin(Plugin):
    name = "dataset_loader"
    description = "Load dataset files (any common format) into validated, split conversations."
    supported_stages = (Stage.INPUT,)
    provides = (
        memory_keys.DATASET_TRAIN,
        memory_keys.DATASET_VALIDATION,
        memory_keys.DATASET_STATS,
        memory_keys.DATASET_STREAM,
    )

    class ConfigModel(PluginConfig):
        dataset_path: str | list[str] | None = Field(
            None,
            description="A data file or folder, or a list of them (.jsonl, .json, .parquet, .csv, .txt, save_to_disk "
            "folders; globs of shards; hf://owner/name[:config][@split]). Or give sources instead.",
        )
        sources: list[DataSource] | None = Field(
            None,
            min_length=1,
            max_length=64,
            description="Several datasets mixed by weight, each with its own path, format, field_map and "
            "max_samples (instead of dataset_path).",
        )
        mix_by: MixUnit = Field(
            "tokens",
            description="What the source weights share out: trained tokens (what the loss sees) or rows.",
        )
        dataset_format: FormatSetting = "auto"
        field_map: FieldMapSetting = {}
        max_samples: MaxSamplesSetting = None
        validation_split: float = Field(
            0.1, ge=0, lt=1, description="Fraction of rows held out for validation when validation_path is not set."
        )
        validation_path: str | list[str] | None = Field(
            None, description="An explicit validation file or folder instead of a split of the training data."
        )
        shuffle: bool = Field(True, description="Shuffle the rows (with seed) before max_samples and the split.")
        seed: int | None = Field(
            None, ge=0, description="Seed for shuffling and the split; defaults to the run's seed."
        )
        on_bad_rows: Literal["error", "skip"] = Field(
            "error", description="error: stop at bad rows and list them; skip: drop them and report counts."
        )
        text_unit: Literal["file", "paragraph"] = Field(
            "file", description="For .txt files: one document per file, or one per blank-line-separated paragraph."
        )
        reuse_parsed: bool = Field(
            True, description="Reuse the parsed rows of unchanged files (same bytes and settings) from the cache."
        )
        cache_max_entries: int | None = Field(
            20,
            ge=1,
            description="Parsed datasets kept in the cache: after storing one, the least recently used beyond this "
            "many are removed. null keeps them all.",
        )
        streaming: bool = Field(
            False,
            description="Read the JSON Lines files row by row during training (flat memory, any size) instead of "
            "loading them here; needs max_steps. See docs/DATA.md.",
        )
        shuffle_buffer: int = Field(
            1000,
            ge=1,
            le=1_000_000,
            description="Streaming: samples held in the seeded shuffle buffer (1 keeps the files' order).",
        )
        validation_rows: int = Field(
            0,
            ge=0,
            le=100_000,
            description="Streaming: rows held out for validation from the head of the data (when validation_path is "
            "not set); 0 validates on nothing.",
        )

        # Field validators where a key is at fault, so that the error points at its line (or its --set).
        @field_validator("sources")
        @classmethod
        def check_sources(cls, sources: list[DataSource] | None, info: ValidationInfo) -> list[DataSource] | None:
            if sources is None:
                return sources
            if info.data.get("dataset_path") is not None:
                raise ValueError("set dataset_path (or --dataset) or sources, not both")
            if not any(source.weight > 0 for source in sources):
                raise ValueError("every source has weight 0, so nothing would be trained; give one a weight above 0")
            duplicates = duplicate_names(sources)
            if duplicates:
                raise ValueError(
                    f"several sources are named {', '.join(map(repr, duplicates))}; give each its own name"
                )
            return sources

        @field_validator("mix_by", "dataset_format", "field_map", "max_samples")
        @classmethod
        def check_single_source_settings(cls, value: Any, info: ValidationInfo) -> Any:
            default = cls.model_fields[info.field_name].get_default(call_default_factory=True)
            with_sources = info.data.get("sources") is not None
            if info.field_name == "mix_by" and not with_sources and value != default:
                raise ValueError("mix_by applies to sources; remove it or list the datasets under sources")
            if info.field_name != "mix_by" and with_sources and value != default:
                own = {"dataset_format": "format"}.get(info.field_name, info.field_name)
                raise ValueError(f"with sources, set {own} on each source, not for the whole loader")
            return value

        @model_validator(mode="after")
        def check_some_data(self) -> DatasetLoaderPlugin.ConfigModel:
            if self.dataset_path is None and self.sources is None:
                raise ValueError(
                    "set dataset_path (a file, folder or glob; or --dataset) or sources (several weighted datasets)"
                )
            return self

    def check_workflow(self, plugins) -> list[Finding]:
        from plugins.data.stream_checks import streaming_findings

        return streaming_findings(self.config, plugins)

    async def _execute_impl(self, context: Any) -> str:
        seed = self.config.seed if self.config.seed is not None else context.seed
        if self.config.streaming:
            return await asyncio.to_thread(self._open_stream, context, seed)
        parts = await asyncio.to_thread(self._load_parts, seed)
        train_set = ConversationDataset(
            [c for part in parts for c in part.dataset.conversations],
            [f for part in parts for f in part.dataset.files],
            [b for part in parts for b in part.dataset.bad_rows],
            [k for part in parts for k in part.dataset.pruned],
        )
        self._report_load(context, train_set)
        check_one_task(train_set.files)
        check_kto_labels(train_set)
        for file in train_set.files:
            context.log(f"{file.path}: {file.format} ({file.reason}); {file.rows} rows, {file.bad_rows} rejected")

        if self.config.validation_path is not None:
            if "validation_split" in self.config.model_fields_set:
                context.warn("validation_split is ignored because validation_path is set")
            validation_set = await asyncio.to_thread(self._load, self.config.validation_path)
            self._report_load(context, validation_set)
            check_one_task(train_set.files + validation_set.files)
            splits = [(part.conversations, []) for part in parts]
            validation = validation_set.conversations
            files = train_set.files + validation_set.files
        else:
            # Already shuffled, so the split itself keeps the order; each source is split on its own.
            splits = [
                split_conversations(part.conversations, self.config.validation_split, seed=seed, shuffle=False)
                for part in parts
            ]
            validation = [c for _, held_out in splits for c in held_out]
            files = train_set.files
        train = [c for split, _ in splits for c in split]

        stats = ConversationDataset(train + validation, files, train_set.bad_rows).statistics()
        stats.update(train_rows=len(train), validation_rows=len(validation), seed=seed)
        if self.config.sources is not None:
            stats["sources"] = source_statistics(self.config.sources, parts, splits)
            stats["mixture"] = mixture_spec(self.config.sources, self.config.mix_by, seed)
            for name, entry in stats["sources"].items():
                context.log(
                    f"source {name}: {entry['rows']} rows ({entry['train_rows']} train / {entry['validation_rows']} "
                    f"validation), weight {entry['weight']:g} of the {self.config.mix_by}"
                )
        train_file = await asyncio.to_thread(
            write_conversations, context.run_dir, _split_name(context, memory_keys.DATASET_TRAIN, "train"), train
        )
        validation_file = await asyncio.to_thread(
            write_conversations,
            context.run_dir,
            _split_name(context, memory_keys.DATASET_VALIDATION, "validation"),
            validation,
        )
        context.remember(memory_keys.DATASET_TRAIN, train_file)
        context.remember(memory_keys.DATASET_VALIDATION, validation_file)
        context.remember(memory_keys.DATASET_STATS, stats)
        context.summarize("dataset_rows", {"train": len(train), "validation": len(validation)})
        formats = "+".join(stats["detected_format"]) or "unknown"
        return (
            f"{len(train)} train / {len(validation)} validation conversations ({formats}, "
            f"{stats['turns']} turns, {stats['characters']:,} characters, {stats['bad_rows']} bad rows skipped)"
        )

    def _open_stream(self, context: Any, seed: int) -> str:
        """Describe the stream for DO, hold out the validation rows, and write the head rows as dataset.train."""
        from plugins.data.stream_input import open_stream, total_bytes

        config = self.config
        sources = config.sources or [
            DataSource(
                path=config.dataset_path,
                format=config.dataset_format,
                field_map=config.field_map,
                max_samples=config.max_samples,
            )
        ]
        opened = open_stream(
            sources,
            mix_by=config.mix_by,
            seed=seed,
            shuffle_buffer=config.shuffle_buffer,
            validation_rows=0 if config.validation_path else config.validation_rows,
            on_bad_rows=config.on_bad_rows,
        )
        spec, head, validation, files = opened.spec, opened.head, opened.validation, opened.files
        if config.validation_path is not None:
            validation_set = self._load(config.validation_path)
            self._report_load(context, validation_set)
            validation, files = validation_set.conversations, files + validation_set.files
        stats = ConversationDataset(head + validation, files).statistics()
        stats.update(
            streaming=True,
            train_rows=None,
            head_rows=len(head),
            validation_rows=len(validation),
            stream_bytes=total_bytes(list(spec.sources)),
            seed=seed,
        )
        context.remember(memory_keys.DATASET_STREAM, spec)
        context.remember(memory_keys.DATASET_TRAIN, write_conversations(context.run_dir, "train-head", head))
        context.remember(
            memory_keys.DATASET_VALIDATION,
            write_conversations(
                context.run_dir, _split_name(context, memory_keys.DATASET_VALIDATION, "validation"), validation
            ),
        )
        context.remember(memory_keys.DATASET_STATS, stats)
        for report in files:
            context.log(f"{report.path}: {report.format} ({report.reason}); streamed, {report.rows} head rows checked")
        return (
            f"streaming {stats['stream_bytes'] / 2**20:,.1f} MiB from {len(files)} file(s) "
            f"({'+'.join(stats['detected_format']) or 'unknown'}); {len(head)} head rows checked, "
            f"{len(validation)} validation rows"
        )

    def _load_parts(self, seed: int) -> list[LoadedSource]:
        """The sources, or the one dataset_path as a single unnamed source."""
        if self.config.sources is None:
            dataset = self._load(self.config.dataset_path)
            conversations = shuffled(dataset.conversations, self.config.max_samples, seed, self.config.shuffle)
            return [LoadedSource(None, dataset, conversations)]
        return load_sources(
            self.config.sources,
            lambda source, key: self._load(source.path, source.format, source.field_map, key=key),
            seed=seed,
            shuffle=self.config.shuffle,
        )

    def _load(
        self,
        paths: str | list[str],
        dataset_format: str | None = None,
        field_map: dict[str, str] | None = None,
        *,
        key: str = "dataset_path",
    ) -> ConversationDataset:
        return load_conversations(
            [paths] if isinstance(paths, str) else list(paths),
            dataset_format=dataset_format or self.config.dataset_format,
            field_map=self.config.field_map if field_map is None else field_map,
            on_bad_rows=self.config.on_bad_rows,
            text_unit=self.config.text_unit,
            cache_dir=cache_root() / "loaded" if self.config.reuse_parsed else None,
            max_cached=self.config.cache_max_entries,
            key=key,
        )

    @staticmethod
    def _report_load(context: Any, dataset: ConversationDataset) -> None:
        if dataset.pruned:
            context.log(
                f"parse cache: removed {len(dataset.pruned)} least recently used entries to keep cache_max_entries: "
                + ", ".join(dataset.pruned)
            )
        if not dataset.bad_rows:
            return
        shown = "; ".join(f"{b.where}: {b.reason}" for b in dataset.bad_rows[:3])
        context.warn(f"skipped {len(dataset.bad_rows)} bad row(s); first: {shown}")


def _split_name(context, key: str, name: str) -> str:
    """``train`` / ``validation``; a step whose ``memory:`` moves the key (a second dataset in the
    workflow) names its files by where the key is, e.g. ``preference.train``."""
    location = context.location_of(key)
    return name if location == key else location
