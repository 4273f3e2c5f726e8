"""Render conversations, tokenize them in batches, and label the tokens to train on.

Which characters are trained comes from the template itself: for assistant turn k we render
``messages[:k]`` with the generation prompt and ``messages[:k+1]``; the characters between the two
renderings are that turn's reply, including the template's end-of-turn token (so the model learns
to stop), minus trailing whitespace. A token is trained when its first character lies in such a
span (the fast tokenizer's character-to-token map). Nothing searches the token ids for marker strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from entity_training import InputError, Problem
from plugins.data.readers import problem_at
from plugins.data.templates import TemplateRenderer

IGNORE_INDEX = -100
TrainOn = Literal["assistant", "last_assistant", "all"]
Truncation = Literal["right", "drop"]
Span = tuple[int, int]


@dataclass
class EncodedSamples:
    """Token ids and labels per sample (int32 arrays), plus what was cut or dropped on the way."""

    input_ids: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    truncated: int = 0  # samples cut at max_seq_length (truncation: right)
    dropped_too_long: int = 0  # samples dropped for being too long (truncation: drop)
    dropped_untrained: int = 0  # samples left without any trained token

    def extend(self, other: EncodedSamples) -> None:
        self.input_ids += other.input_ids
        self.labels += other.labels
        self.truncated += other.truncated
        self.dropped_too_long += other.dropped_too_long
        self.dropped_untrained += other.dropped_untrained


def trained_spans(
    renderer: TemplateRenderer, conversation: dict[str, Any], train_on: TrainOn
) -> tuple[str, list[Span]]:
    """The rendered text of a conversation and the character spans whose tokens are trained."""
    messages = conversation["messages"]
    source = conversation.get("source")
    if conversation.get("document"):
        text = renderer.bos_token + messages[0]["content"] + renderer.eos_token
        return text, [(0, len(text))]
    tools = conversation.get("tools")
    text = renderer.render(messages, tools=tools, source=source)
    if train_on == "all":
        return text, [(0, len(text))]
    turns = [k for k, message in enumerate(messages) if message["role"] == "assistant"]
    if train_on == "last_assistant":
        turns = turns[-1:]
    return text, turn_spans(renderer, conversation, text, turns)


def turn_spans(renderer: TemplateRenderer, conversation: dict[str, Any], text: str, turns: list[int]) -> list[Span]:
    """The character spans of the assistant messages ``turns`` in ``text``, the conversation's rendering."""
    messages = conversation["messages"]
    source = conversation.get("source")
    tools = conversation.get("tools")
    spans = []
    for k in turns:
        before = renderer.render(messages[:k], tools=tools, add_generation_prompt=True, source=source)
        after = text if k == len(messages) - 1 else renderer.render(messages[: k + 1], tools=tools, source=source)
        if not (text.startswith(before) and text.startswith(after)):
            raise _not_prefix_stable(source, k)
        if len(after) <= len(before):
            raise InputError(
                problem_at(
                    source,
                    f"the chat template renders nothing for message {k} (assistant), so it has nothing to train on; "
                    "the template may drop tool calls or empty replies. Choose another chat_template (e.g. chatml).",
                )
            )
        end = len(after.rstrip())
        spans.append((len(before), max(end, len(before))))
    return spans


def trained_token_mask(encoding: Any, spans: Sequence[Span], text_length: int) -> np.ndarray:
    """Boolean mask over the tokens of ``encoding``: token i is trained when its first character is in a span.

    Only the span boundaries are looked up (``char_to_token``), so no per-token Python work is done.
    """
    count = len(encoding.ids)
    mask = np.zeros(count, dtype=bool)
    for start, end in spans:
        mask[
            first_token_from(encoding, start, count, text_length) : first_token_from(encoding, end, count, text_length)
        ] = True
    return mask


def first_token_from(encoding: Any, char: int, count: int, text_length: int) -> int:
    """Index of the first token that starts at or after character ``char``."""
    while char < text_length:
        token = encoding.char_to_token(char)
        if token is not None:
            return token if encoding.token_to_chars(token)[0] >= char else token + 1
        char += 1  # a character no token covers (trimmed whitespace): look at the next one
    return count


def encode_conversations(
    conversations: Sequence[dict[str, Any]],
    tokenizer: Any,
    renderer: TemplateRenderer,
    *,
    train_on: TrainOn,
    max_seq_length: int,
    truncation: Truncation,
    chunk_size: int = 512,
    num_proc: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> EncodedSamples:
    """Render, tokenize (one batched call per chunk), label and truncate every conversation.

    ``num_proc > 1`` spreads the chunks over spawned worker processes (rendering is pure Python);
    the result is identical, in the same order.
    """
    backend = backend_tokenizer(tokenizer)
    options = (train_on, max_seq_length, truncation)
    chunks = [conversations[start : start + chunk_size] for start in range(0, len(conversations), chunk_size)]
    if num_proc > 1 and len(chunks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent runs threads (event loop, console) that fork would copy mid-flight.
        pool = ProcessPoolExecutor(
            max_workers=min(num_proc, len(chunks)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(backend, renderer),
        )
        with pool:
            parts = pool.map(_encode_chunk_in_worker, chunks, [options] * len(chunks))
            return _gather(parts, len(conversations), on_progress)
    parts = (_encode_chunk(chunk, backend, renderer, *options) for chunk in chunks)
    return _gather(parts, len(conversations), on_progress)


def _gather(
    parts: Iterable[tuple[int, EncodedSamples]], total: int, on_progress: Callable[[int, int], None] | None
) -> EncodedSamples:
    result, done = EncodedSamples(), 0
    for count, part in parts:
        result.extend(part)
        done += count
        if on_progress is not None:
            on_progress(done, total)
    return result


def _encode_chunk(
    chunk: Sequence[dict[str, Any]],
    backend: Any,
    renderer: TemplateRenderer,
    train_on: TrainOn,
    max_seq_length: int,
    truncation: Truncation,
) -> tuple[int, EncodedSamples]:
    rendered = [trained_spans(renderer, conversation, train_on) for conversation in chunk]
    encodings = backend.encode_batch([text for text, _ in rendered], add_special_tokens=False)
    return len(chunk), _label_chunk(encodings, rendered, max_seq_length, truncation)


def encode_one(
    conversation: dict[str, Any],
    backend: Any,
    renderer: TemplateRenderer,
    *,
    train_on: TrainOn,
    max_seq_length: int,
    truncation: Truncation,
) -> EncodedSamples:
    """One conversation as ``encode_conversations`` would encode it (none or one sample), for streaming."""
    return _encode_chunk([conversation], backend, renderer, train_on, max_seq_length, truncation)[1]


_worker: dict[str, Any] = {}


def _start_worker(backend: Any, renderer: TemplateRenderer) -> None:
    _worker.update(backend=backend, renderer=renderer)


def _encode_chunk_in_worker(chunk: Sequence[dict[str, Any]], options: tuple) -> tuple[int, EncodedSamples]:
    return _encode_chunk(chunk, _worker["backend"], _worker["renderer"], *options)


def _label_chunk(
    encodings: list[Any], rendered: list[tuple[str, list[Span]]], max_seq_length: int, truncation: Truncation
) -> EncodedSamples:
    out = EncodedSamples()
    for encoding, (text, spans) in zip(encodings, rendered, strict=True):
        ids = np.asarray(encoding.ids, dtype=np.int32)
        if len(ids) > max_seq_length:
            if truncation == "drop":
                out.dropped_too_long += 1
                continue
            out.truncated += 1
        if len(ids) == 0:
            out.dropped_untrained += 1
            continue
        labels = np.where(trained_token_mask(encoding, spans, len(text)), ids, IGNORE_INDEX).astype(np.int32)
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        labels[0] = IGNORE_INDEX  # never predicted from inside the sample (and never across samples when packed)
        if not (labels != IGNORE_INDEX).any():
            out.dropped_untrained += 1
            continue
        out.input_ids.append(ids)
        out.labels.append(labels)
    return out


def backend_tokenizer(tokenizer: Any) -> Any:
    """The Rust tokenizer behind a fast tokenizer, without truncation or padding configured on it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError(
            Problem(
                f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} is not a fast tokenizer; "
                "token offsets (needed for label masking) require one (a tokenizer.json)."
            )
        )
    if backend.truncation is not None or backend.padding is not None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    return backend


def _not_prefix_stable(source: dict[str, Any] | None, turn: int) -> InputError:
    return InputError(
        problem_at(
            source,
            f"the chat template is not prefix-stable at message {turn}: rendering the conversation up to that "
            "assistant turn is not a prefix of the whole rendering (the template rewrites earlier turns, e.g. drops "
            "reasoning), so the turn's tokens cannot be located. Use train_on: last_assistant, or another "
            "chat_template such as chatml.",
        )
    )
