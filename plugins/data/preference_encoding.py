"""Encode preference rows (pairs, or KTO completions) into labelled sequences, one per answer.

Each answer is rendered after the prompt turns with the chat template, and only its tokens (the
answer's assistant turns and their end-of-turn token) are labelled, located from the template as
SFT's masks are (``encoding.turn_spans``). A pair too long for ``max_seq_length`` loses the start of
its prompt first, the same number of tokens in both sequences; only when the prompt is down to half
the limit are the answers cut at their end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plugins.data.encoding import IGNORE_INDEX, Truncation, backend_tokenizer, first_token_from, turn_spans
from plugins.data.preference_tokenized import PARTS, EncodedExample, PreferenceTask
from plugins.data.templates import TemplateRenderer


@dataclass
class EncodedPreferences:
    examples: list[EncodedExample] = field(default_factory=list)
    truncated: int = 0  # examples cut to max_seq_length
    dropped_too_long: int = 0  # examples left out for being too long (truncation: drop)
    dropped_untrained: int = 0  # examples with an answer left without any trained token


@dataclass(frozen=True)
class _Sequence:
    ids: np.ndarray
    trained: np.ndarray  # bool per token
    prompt_tokens: int


def encode_preferences(
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    renderer: TemplateRenderer,
    *,
    task: PreferenceTask,
    max_seq_length: int,
    truncation: Truncation,
    chunk_size: int = 256,
    on_progress: Callable[[int, int], None] | None = None,
) -> EncodedPreferences:
    """Render, tokenize (one batched call per chunk), label and truncate every row's answers."""
    backend = backend_tokenizer(tokenizer)
    parts = PARTS[task]
    out = EncodedPreferences()
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        rendered = [_render(renderer, row, part) for row in chunk for part in parts]
        encodings = backend.encode_batch([text for text, _ in rendered], add_special_tokens=False)
        sequences = [
            _sequence(encoding, text, spans) for encoding, (text, spans) in zip(encodings, rendered, strict=True)
        ]
        for index, row in enumerate(chunk):
            pair = sequences[index * len(parts) : (index + 1) * len(parts)]
            _add_example(out, row, dict(zip(parts, pair, strict=True)), max_seq_length, truncation)
        if on_progress is not None:
            on_progress(min(start + chunk_size, len(rows)), len(rows))
    return out


def _render(renderer: TemplateRenderer, row: dict[str, Any], part: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendering of the prompt turns followed by the answer ``part``, and the answer's trained spans."""
    prompt = row["messages"]
    conversation = {"messages": prompt + row[part], "tools": row.get("tools"), "source": row.get("source")}
    text = renderer.render(conversation["messages"], tools=conversation["tools"], source=conversation["source"])
    answer_turns = list(range(len(prompt), len(conversation["messages"])))
    return text, turn_spans(renderer, conversation, text, answer_turns)


def _sequence(encoding: Any, text: str, spans: list[tuple[int, int]]) -> _Sequence:
    ids = np.asarray(encoding.ids, dtype=np.int32)
    trained = np.zeros(len(ids), dtype=bool)
    for start, end in spans:
        trained[
            first_token_from(encoding, start, len(ids), len(text)) : first_token_from(
                encoding, end, len(ids), len(text)
            )
        ] = True
    # The prompt ends where the first answer's span starts (after the template's generation prompt).
    return _Sequence(ids, trained, first_token_from(encoding, spans[0][0], len(ids), len(text)))


def _add_example(
    out: EncodedPreferences,
    row: dict[str, Any],
    sequences: dict[str, _Sequence],
    max_seq_length: int,
    truncation: Truncation,
) -> None:
    too_long = max(len(s.ids) for s in sequences.values()) > max_seq_length
    if too_long and truncation == "drop":
        out.dropped_too_long += 1
        return
    keep_prompt = _prompt_tokens_to_keep(sequences.values(), max_seq_length) if too_long else None
    parts = {}
    for part, sequence in sequences.items():
        ids, trained = _truncate(sequence, keep_prompt, max_seq_length)
        if not trained.any():
            out.dropped_untrained += 1
            return
        parts[part] = (ids, np.where(trained, ids, IGNORE_INDEX).astype(np.int32))
    out.truncated += too_long
    out.examples.append(EncodedExample(parts=parts, desirable=row.get("desirable"), source=row.get("source") or {}))


def _prompt_tokens_to_keep(sequences: Any, max_seq_length: int) -> int:
    """Prompt tokens kept when an example is too long: all the longest answer leaves room for, but at least
    half the limit (or the whole prompt when it is shorter), so that the answers still have a context."""
    sequences = list(sequences)
    longest_answer = max(len(s.ids) - s.prompt_tokens for s in sequences)
    shortest_prompt = min(s.prompt_tokens for s in sequences)
    return min(shortest_prompt, max(max_seq_length - longest_answer, max_seq_length // 2))


def _truncate(sequence: _Sequence, keep_prompt: int | None, max_seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    if keep_prompt is None:
        return sequence.ids, sequence.trained
    start = sequence.prompt_tokens - keep_prompt
    end = sequence.prompt_tokens + max_seq_length - keep_prompt
    return sequence.ids[start:end], sequence.trained[start:end]
