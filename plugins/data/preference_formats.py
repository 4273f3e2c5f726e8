"""Preference dataset formats: detect one from a row's keys and normalise it, beside the SFT formats.

Paired rows (task ``preference``: DPO, IPO, ORPO, SimPO) become::

    {"messages": [prompt turns], "chosen": [assistant message(s)], "rejected": [assistant message(s)]}

and unpaired rows (task ``unpaired``: KTO)::

    {"messages": [prompt turns], "completion": [assistant message(s)], "desirable": bool}

(plus ``source``, added by the loader). ``detect_row_format``, ``normalise_any_row`` and
``missing_keys_of`` cover the SFT formats of ``plugins.data.formats`` too, preference rules first:
a row with ``conversations``, ``chosen`` and ``rejected`` is a pair, not an SFT conversation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from plugins.data import formats
from plugins.data.formats import (
    BadRow,
    as_text,
    make_message,
    openai_messages,
    parse_tools,
    required,
    sharegpt_conversation,
)

Task = Literal["sft", "preference", "unpaired"]
PAIRED = ("chosen", "rejected")

# Ordered: the first rule whose keys are all present wins; all come before the SFT rules.
PREFERENCE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sharegpt_pairs", ("conversations", *PAIRED)),
    ("openai_pairs", ("messages", *PAIRED)),
    ("prompt_pairs", ("prompt", *PAIRED)),
    ("transcript_pairs", PAIRED),
    ("kto_messages", ("messages", "label")),
    ("kto_prompt_completion", ("prompt", "completion", "label")),
)
PREFERENCE_FORMATS = tuple(fmt for fmt, _ in PREFERENCE_RULES)
TASK_OF_FORMAT: dict[str, Task] = {
    **{fmt: "preference" for fmt in PREFERENCE_FORMATS if fmt.endswith("_pairs")},
    **{fmt: "unpaired" for fmt in PREFERENCE_FORMATS if fmt.startswith("kto_")},
}
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
HH_ANSWER = "\n\nAssistant:"


def task_of_format(fmt: str) -> Task:
    return TASK_OF_FORMAT.get(fmt, "sft")


def task_of_conversation(conversation: Mapping[str, Any]) -> Task:
    """The task of a normalised row, from the keys it carries."""
    if "chosen" in conversation:
        return "preference"
    return "unpaired" if "completion" in conversation else "sft"


def detect_row_format(row: Any) -> tuple[str, str]:
    """``(format, why)`` for one row of any format, SFT or preference; raise BadRow when none fits."""
    if isinstance(row, Mapping):
        for fmt, keys in PREFERENCE_RULES:
            if all(key in row for key in keys):
                return fmt, f"keys {', '.join(repr(k) for k in keys)} found"
        half_pair = [key for key in PAIRED if key in row]
        if len(half_pair) == 1:
            other = next(key for key in PAIRED if key not in row)
            raise BadRow(
                f"a preference pair needs both 'chosen' and 'rejected'; this row has {half_pair[0]!r} but no {other!r}"
            )
    return formats.detect_format(row)


def normalise_any_row(row: Any, fmt: str) -> dict[str, Any]:
    """Normalise one row of format ``fmt`` (SFT or preference), without ``source``; raise BadRow if it does not fit."""
    if fmt not in _NORMALISERS:
        return formats.normalise_row(row, fmt)
    if not isinstance(row, Mapping):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}")
    normalised = _NORMALISERS[fmt](row)
    _check_prompt(normalised["messages"])
    answers = PAIRED if "chosen" in normalised else ("completion",)
    for key in answers:
        _check_answer(normalised[key], key)
    if "chosen" in normalised and normalised["chosen"] == normalised["rejected"]:
        raise BadRow("'chosen' and 'rejected' are identical, so the pair prefers nothing")
    tools = row.get("tools")
    if tools not in (None, "", []):
        normalised["tools"] = parse_tools(tools)
    return normalised


def missing_keys_of(row: Mapping[str, Any], fmt: str) -> list[str]:
    keys = dict(PREFERENCE_RULES).get(fmt)
    return formats.missing_keys(row, fmt) if keys is None else [key for key in keys if key not in row]


# -- per-format normalisers -------------------------------------------------------------------


def _sharegpt_pairs(row: Mapping[str, Any]) -> dict[str, Any]:
    prompt = sharegpt_conversation(row)["messages"]  # also takes the optional 'system' column
    return {"messages": prompt, **{key: _sharegpt_answer(row, key) for key in PAIRED}}


def _openai_pairs(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"messages": openai_messages(required(row, "messages"), "messages"), **_openai_answers(row)}


def _prompt_pairs(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"messages": _prompt(row), **_openai_answers(row)}


def _transcript_pairs(row: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic HH style: two whole transcripts that share every turn but the last answer."""
    chosen, rejected = (as_text(required(row, key), repr(key)) for key in PAIRED)
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(HH_ANSWER)
    if cut < 0:
        raise BadRow(
            "'chosen' and 'rejected' hold no prompt: transcripts must share their turns up to a last "
            "'\\n\\nAssistant:' (Anthropic HH style), or give the prompt in a 'prompt' column"
        )
    answers = {}
    for key, text in zip(PAIRED, (chosen, rejected), strict=True):
        answer = text[cut + len(HH_ANSWER) :]
        if HH_TURN.search(answer):
            raise BadRow(f"the transcripts differ before their last assistant turn ({key!r} goes on with more turns)")
        answers[key] = [make_message("assistant", answer.strip())]
    return {"messages": _hh_turns(chosen[:cut]), **answers}


def _kto_messages(row: Mapping[str, Any]) -> dict[str, Any]:
    messages = openai_messages(required(row, "messages"), "messages")
    start = len(messages)
    while start > 0 and messages[start - 1]["role"] == "assistant":
        start -= 1
    if start == len(messages):
        raise BadRow("'messages' does not end with an assistant turn, so there is no completion to label")
    return {"messages": messages[:start], "completion": messages[start:], "desirable": _label(row)}


def _kto_prompt_completion(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"messages": _prompt(row), "completion": _answer(row, "completion"), "desirable": _label(row)}


_NORMALISERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "sharegpt_pairs": _sharegpt_pairs,
    "openai_pairs": _openai_pairs,
    "prompt_pairs": _prompt_pairs,
    "transcript_pairs": _transcript_pairs,
    "kto_messages": _kto_messages,
    "kto_prompt_completion": _kto_prompt_completion,
}


# -- helpers ----------------------------------------------------------------------------------


def _prompt(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A 'prompt' column: a string (one user turn) or a list of messages."""
    prompt = required(row, "prompt")
    if isinstance(prompt, list) and not all(isinstance(m, Mapping) and "text" in m for m in prompt):
        return openai_messages(prompt, "prompt")
    return [make_message("user", as_text(prompt, "'prompt'"))]


def _openai_answers(row: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {key: _answer(row, key) for key in PAIRED}


def _answer(row: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """An answer column: a string, one message, or a list of messages."""
    value = required(row, key)
    if isinstance(value, Mapping):
        return openai_messages([value], key)
    if isinstance(value, list) and not all(isinstance(m, Mapping) and "text" in m for m in value):
        return openai_messages(value, key)
    return [make_message("assistant", as_text(value, repr(key)))]


def _sharegpt_answer(row: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    turn = required(row, key)
    turns = turn if isinstance(turn, list) else [turn]
    return sharegpt_conversation({"conversations": turns})["messages"]


def _hh_turns(transcript: str) -> list[dict[str, Any]]:
    pieces = HH_TURN.split(transcript)
    if pieces[0].strip():
        raise BadRow("the transcripts must start with '\\n\\nHuman:' (Anthropic HH style)")
    return [
        make_message(HH_ROLES[speaker], text.strip()) for speaker, text in zip(pieces[1::2], pieces[2::2], strict=True)
    ]


def _label(row: Mapping[str, Any]) -> bool:
    label = required(row, "label")
    if not isinstance(label, bool):
        raise BadRow(f"'label' must be true (desirable) or false (undesirable), got {label!r}")
    return label


def _check_prompt(messages: list[dict[str, Any]]) -> None:
    if not any(message["content"].strip() or message.get("tool_calls") for message in messages):
        raise BadRow("the prompt is empty, so the answers answer nothing")


def _check_answer(messages: list[dict[str, Any]], key: str) -> None:
    if not messages:
        raise BadRow(f"{key!r} holds no message")
    for message in messages:
        if message["role"] != "assistant":
            raise BadRow(f"{key!r} must hold assistant turns, not a {message['role']!r} turn")
        if not message["content"].strip() and not message.get("tool_calls"):
            raise BadRow(f"{key!r} is empty")
