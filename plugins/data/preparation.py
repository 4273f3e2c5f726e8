"""Conversations -> tokenized, labelled, packed splits on disk, through the cache.

Preference data (pairs, or KTO completions; the task comes from the rows) is encoded one sequence
per answer and written with ``preference_tokenized``, never packed.

``prepare_tokenized`` is the whole THINK-stage data job; the plugin, the benchmark and the
``preview`` command call it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from plugins.data import cache, cache_pruning
from plugins.data.encoding import EncodedSamples, TrainOn, Truncation, encode_conversations
from plugins.data.mixed_encoding import encode_mixture
from plugins.data.packing import best_fit_decreasing, packing_efficiency
from plugins.data.preference_encoding import EncodedPreferences, encode_preferences
from plugins.data.preference_formats import task_of_conversation
from plugins.data.preference_tokenized import PARTS, write_preference_split
from plugins.data.templates import TemplateRenderer, resolve_chat_template
from plugins.data.tokenized import write_split
from plugins.data.tokenizer_identity import TokenizerFiles, tokenizer_digest

SPLITS = ("train", "validation")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PreparationOptions:
    max_seq_length: int
    chat_template: str = "tokenizer"
    train_on: TrainOn = "assistant"
    packing: bool = True
    truncation: Truncation = "right"


@dataclass
class PreparedData:
    tokenized: dict[str, Any]  # the dataset.tokenized memory entry
    stats: dict[str, Any]  # the dataset.token_stats memory entry
    cache_hit: bool
    stale_reason: str | None = None  # why an existing entry under the key was rebuilt
    pruned: list[cache_pruning.Removed] = field(default_factory=list)  # entries removed to keep the cache bounded


def prepare_tokenized(
    train: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]] | None,
    tokenizer: Any,
    options: PreparationOptions,
    *,
    cache_dir: Path,
    rebuild: bool = False,
    num_proc: int = 1,
    on_progress: Progress | None = None,
    tokenizer_files: TokenizerFiles | None = None,
    max_entries: int | None = None,
    mixture: dict[str, Any] | None = None,
) -> PreparedData:
    """Tokenize both splits, or load them from the cache when an intact entry exists under the key.

    ``num_proc`` only changes how fast a miss is built, never the result, so it is not in the key.
    ``tokenizer_files`` (from ``tokenizer_identity.source_files`` at loading) lets an unchanged
    tokenizer skip hashing its vocabulary. After writing a new entry, only the ``max_entries`` most
    recently used entries are kept (None: all), except those in use by live processes.
    ``mixture`` (``dataset.stats["mixture"]``, from a loader with ``sources``) mixes the training
    split by source weight (``plugins.data.mixed_encoding``); the validation split is kept whole.
    """
    template = resolve_chat_template(options.chat_template, tokenizer)
    task = task_of_conversation(train[0]) if train else "sft"
    if task != "sft":
        options = replace(options, packing=False)  # a pair's two sequences are compared, never packed
    key = cache.cache_key(
        {
            "train": cache.dataset_digest(train),
            "validation": cache.dataset_digest(validation or []),
            "tokenizer": tokenizer_digest(tokenizer, template, files=tokenizer_files, memo_dir=cache_dir),
            **asdict(options),
            # Only preference data names its task: SFT keys stay as they were, so existing entries still hit.
            **({"task": task} if task != "sft" else {}),
            **({"mixture": mixture_key(mixture, train)} if mixture else {}),
        }
    )
    entry = cache_dir / key
    cache_pruning.hold(cache_dir, key)
    manifest = None if rebuild else cache.intact_manifest(entry, key)[0]
    if manifest is not None:
        cache_pruning.mark_used(entry)
        return _result(entry, manifest, cache_hit=True)
    started = time.time()
    with cache.build_lock(cache_dir, key):
        problem = cache.verify_entry(entry, key) if entry.exists() else None
        # Whoever held the lock (another rank, a parallel run) may have just built the entry.
        if entry.exists() and problem is None and (not rebuild or cache.built_since(entry, started)):
            return _result(entry, cache.read_manifest(entry), cache_hit=True)
        stale_reason = "rebuild_cache is set" if rebuild and entry.exists() else problem
        renderer = TemplateRenderer(template, tokenizer)
        splits = {"train": train, "validation": validation}
        entry = cache.build_entry(
            cache_dir,
            key,
            lambda folder: _write_splits(
                folder, splits, tokenizer, renderer, options, num_proc, on_progress, task, mixture
            ),
        )
    prepared = _result(entry, cache.read_manifest(entry), cache_hit=False, stale_reason=stale_reason)
    if max_entries is not None:
        prepared.pruned = cache_pruning.prune(cache_dir, keep=max_entries, protect=key)
    return prepared


def _write_splits(
    folder: Path,
    splits: dict[str, Sequence[dict[str, Any]] | None],
    tokenizer: Any,
    renderer: TemplateRenderer,
    options: PreparationOptions,
    num_proc: int,
    on_progress: Progress | None,
    task: str,
    mixture: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Encode, mix (the training split, with ``mixture``), pack and write every split into ``folder``; return the manifest."""
    written: dict[str, Any] = {}
    stats: dict[str, Any] = {}

    def encode(conversations: Sequence[dict[str, Any]], progress: Callable[[int, int], None] | None):
        if task != "sft":
            return encode_preferences(
                conversations,
                tokenizer,
                renderer,
                task=task,
                max_seq_length=options.max_seq_length,
                truncation=options.truncation,
                on_progress=progress,
            )
        return encode_conversations(
            conversations,
            tokenizer,
            renderer,
            train_on=options.train_on,
            max_seq_length=options.max_seq_length,
            truncation=options.truncation,
            num_proc=num_proc,
            on_progress=progress,
        )

    for name, conversations in splits.items():
        if not conversations:
            written[name] = stats[name] = None
            continue
        progress = (lambda done, total, n=name: on_progress(f"tokenize {n}", done, total)) if on_progress else None
        mixed = None
        if mixture and name == "train":
            encoded, mixed = encode_mixture(conversations, encode, mixture, progress)
        else:
            encoded = encode(conversations, progress)
        if task != "sft":
            written[name] = write_preference_split(folder / name, encoded.examples, task)
            stats[name] = _preference_stats(encoded, written[name], options.max_seq_length, len(conversations))
        else:
            written[name] = write_split(folder / name, _group_rows(encoded, options), encoded.input_ids, encoded.labels)
            stats[name] = _split_stats(encoded, written[name], options.max_seq_length, len(conversations))
        if mixed:
            stats[name]["mixture"] = mixed
    return {
        "splits": written,
        "stats": stats,
        "chat_template": renderer.source,
        "options": asdict(options),
        "task": task,
    }


def mixture_key(mixture: dict[str, Any], train: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mixture's part of the cache key: its spec, and which source each conversation belongs to
    (``dataset_digest`` leaves the ``source`` of a conversation out)."""
    names = "\n".join(str((c.get("source") or {}).get("name")) for c in train)
    return {**mixture, "sources": hashlib.sha256(names.encode()).hexdigest()}


def _group_rows(encoded: EncodedSamples, options: PreparationOptions) -> list[list[int]]:
    if not options.packing:
        return [[index] for index in range(len(encoded.input_ids))]
    return best_fit_decreasing([len(ids) for ids in encoded.input_ids], options.max_seq_length)


def _split_stats(
    encoded: EncodedSamples, written: dict[str, Any], max_seq_length: int, conversations: int
) -> dict[str, Any]:
    return {
        "conversations": conversations,
        "samples": written["samples"],
        "rows": written["rows"],
        "tokens": written["tokens"],
        "trained_tokens": written["trained_tokens"],
        "truncated_samples": encoded.truncated,
        "dropped_too_long": encoded.dropped_too_long,
        "dropped_untrained": encoded.dropped_untrained,
        "packing_efficiency": round(packing_efficiency(written["tokens"], written["rows"], max_seq_length), 4),
    }


def _preference_stats(
    encoded: EncodedPreferences, written: dict[str, Any], max_seq_length: int, rows: int
) -> dict[str, Any]:
    """The SFT split statistics, counted in examples (a pair, or a KTO completion) and their sequences."""
    sequences = written["rows"] * len(PARTS[written["task"]])
    return {
        "task": written["task"],
        "conversations": rows,
        "samples": written["rows"],
        "rows": written["rows"],
        "sequences": sequences,
        "tokens": written["tokens"],
        "trained_tokens": written["trained_tokens"],
        "truncated_samples": encoded.truncated,
        "dropped_too_long": encoded.dropped_too_long,
        "dropped_untrained": encoded.dropped_untrained,
        # Not packed: the share of max_seq_length the sequences fill.
        "packing_efficiency": round(packing_efficiency(written["tokens"], sequences, max_seq_length), 4),
    }


def _result(entry: Path, manifest: dict[str, Any], *, cache_hit: bool, stale_reason: str | None = None) -> PreparedData:
    options = manifest["options"]
    tokenized = {split: str(entry / split) if manifest["splits"].get(split) else None for split in SPLITS} | {
        "cache_key": manifest["cache_key"],
        "max_seq_length": options["max_seq_length"],
        "chat_template": manifest["chat_template"],
        "train_on": options["train_on"],
        "packing": options["packing"],
        "task": manifest.get("task", "sft"),
    }
    train = manifest["stats"]["train"]
    stats = {
        "task": tokenized["task"],
        "tokens": train["tokens"],
        "trained_tokens": train["trained_tokens"],
        "truncated_samples": train["truncated_samples"],
        "dropped_samples": train["dropped_too_long"] + train["dropped_untrained"],
        "packing_efficiency": train["packing_efficiency"],
        "cache_key": manifest["cache_key"],
        "cache_hit": cache_hit,
        **{split: manifest["stats"][split] for split in SPLITS},
        **({"mixture": train["mixture"]} if train.get("mixture") else {}),
    }
    return PreparedData(tokenized, stats, cache_hit, stale_reason)


def streamed(prepared: PreparedData, stream: Any, *, truncation: Truncation) -> PreparedData:
    """The hand-over for a streamed dataset: DO reads ``stream`` (a ``StreamSpec``) with these settings.

    ``prepared`` holds the head rows INPUT checked (their tokens and statistics, measured on those
    rows only), kept as ``head``; ``train`` is None, so nothing trains on the head by mistake.
    """
    from plugins.data.stream_spec import StreamSpec

    spec = StreamSpec.model_validate(stream)
    tokenized = prepared.tokenized | {
        "train": None,
        "head": prepared.tokenized["train"],
        "stream": spec.model_dump(mode="json"),
        "truncation": truncation,
    }
    stats = prepared.stats | {"streaming": True, "measured_on": "the head rows checked at INPUT"}
    return replace(prepared, tokenized=tokenized, stats=stats)
