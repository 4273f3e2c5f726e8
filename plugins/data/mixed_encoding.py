"""Tokenize a training split source by source, then keep the samples of the weighted mixture.

The mixture needs each sample's trained tokens, known only once it is tokenized, so the sources
are encoded one by one (each conversation's ``source["name"]`` says whose it is) and
``mixture.mix_samples`` picks from them. Works for SFT samples and for preference examples alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from entity_training import InputError, Problem
from plugins.data.encoding import IGNORE_INDEX, EncodedSamples
from plugins.data.mixture import mix_samples
from plugins.data.preference_encoding import EncodedPreferences

Encoded = EncodedSamples | EncodedPreferences
Encode = Callable[[Sequence[dict[str, Any]], Callable[[int, int], None] | None], Encoded]


def encode_mixture(
    conversations: Sequence[dict[str, Any]],
    encode: Encode,
    mixture: dict[str, Any],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Encoded, dict[str, Any]]:
    """The mixed samples, in training order, and what the mixture realised (``token_stats["mixture"]``).

    ``encode(conversations, on_progress)`` tokenizes one source; ``mixture`` is the loader's spec
    (``mix_by``, ``weights`` by source name, ``seed``). Raises InputError when a source with a
    positive weight has no sample left after tokenization.
    """
    weights = mixture["weights"]
    groups: dict[str, list[dict[str, Any]]] = {name: [] for name in weights}
    for conversation in conversations:
        name = (conversation.get("source") or {}).get("name")
        if name not in groups:
            raise InputError(
                Problem(
                    f"a training conversation belongs to no source of the mixture (source {name!r}; the sources are "
                    f"{', '.join(weights)}); the dataset split was written by another loader. Run without --resume."
                )
            )
        groups[name].append(conversation)
    encoded, done = {}, 0
    for name, group in groups.items():
        if weights[name] > 0 and group:
            progress = (lambda d, t, before=done: on_progress(before + d, len(conversations))) if on_progress else None
            encoded[name] = encode(group, progress)
        done += len(group)
    counts = {name: trained_per_sample(part) for name, part in encoded.items()}
    empty = [name for name in weights if weights[name] > 0 and not counts.get(name)]
    if empty:
        raise InputError(
            Problem(
                f"the source(s) {', '.join(map(repr, empty))} have no training sample with a trained token left after "
                "tokenization (too long for max_seq_length with truncation: drop, or all held out for validation). "
                "Raise max_seq_length, add rows, or set their weight to 0."
            )
        )
    chosen, scheduler = mix_samples(counts, weights, mixture["mix_by"], seed=mixture["seed"])
    realised = scheduler.realised()
    for name, entry in realised.items():
        entry["available_rows"] = len(counts.get(name, ()))
        entry["available_trained_tokens"] = sum(counts.get(name, ()))
        entry["passes"] = round(entry["rows"] / entry["available_rows"], 3) if entry["available_rows"] else 0.0
    summary = {"mix_by": mixture["mix_by"], "seed": mixture["seed"], "samples": len(chosen), "sources": realised}
    return _gather(list(encoded.values()), [encoded[name] for name, _ in chosen], [i for _, i in chosen]), summary


def trained_per_sample(encoded: Encoded) -> list[int]:
    """Trained tokens of each sample (SFT) or example (all its sequences, for preference data)."""
    if isinstance(encoded, EncodedSamples):
        return [int((labels != IGNORE_INDEX).sum()) for labels in encoded.labels]
    return [
        sum(int((labels != IGNORE_INDEX).sum()) for _, labels in example.parts.values()) for example in encoded.examples
    ]


def _gather(parts: list[Encoded], owners: list[Encoded], indices: list[int]) -> Encoded:
    """The chosen samples (``owners[k]``'s sample ``indices[k]``), with the drop counts of every part."""
    counters = {
        "truncated": sum(p.truncated for p in parts),
        "dropped_too_long": sum(p.dropped_too_long for p in parts),
        "dropped_untrained": sum(p.dropped_untrained for p in parts),
    }
    if isinstance(parts[0], EncodedSamples):
        return EncodedSamples(
            input_ids=[owner.input_ids[i] for owner, i in zip(owners, indices, strict=True)],
            labels=[owner.labels[i] for owner, i in zip(owners, indices, strict=True)],
            **counters,
        )
    return EncodedPreferences(
        examples=[owner.examples[i] for owner, i in zip(owners, indices, strict=True)], **counters
    )
