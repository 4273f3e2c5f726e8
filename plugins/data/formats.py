"""Dataset formats: detect one from a row's keys and normalise rows to the conversation form.

The conversation form every later stage reads::

    {"messages": [{"role": "system|user|assistant|tool", "content": str, "tool_calls"?: list}],
     "tools"?: list | str, "document"?: True, "source": {"file": str, "line"|"index": int}}

``document: True`` marks a plain-text document (format ``text``): one assistant message holding the
text, trained on every token and rendered without a chat template.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
FORMATS = ("alpaca", "sharegpt", "openai", "prompt_completion", "text")
FORMAT_OPTIONS = ("auto", *FORMATS, "json")

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}

# Ordered: the first rule whose keys are all present wins.
DETECTION_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sharegpt", ("conversations",)),
    ("openai", ("messages",)),
    ("alpaca", ("instruction", "output")),
    ("prompt_completion", ("prompt", "completion")),
    ("text", ("text",)),
)


class BadRow(ValueError):
    """A row that does not fit its format; the message is the reason, shown with file and line."""


def detect_format(row: Any) -> tuple[str, str]:
    """Return ``(format, why)`` for one row, or raise BadRow naming the keys that were found."""
    if not isinstance(row, Mapping):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}")
    for fmt, keys in DETECTION_RULES:
        if all(key in row for key in keys):
            return fmt, f"keys {', '.join(repr(k) for k in keys)} found"
    found = ", ".join(repr(k) for k in list(row)[:8]) or "none"
    raise BadRow(
        f"cannot tell the format from the keys ({found}); expected instruction/output (alpaca), "
        "conversations (sharegpt), messages (openai), prompt/completion or text. "
        "Set dataset_format, or rename columns with field_map"
    )


def apply_field_map(row: Any, field_map: Mapping[str, str]) -> Any:
    """Rename the columns of one row: ``field_map`` maps a column in the file to the name we expect."""
    if not field_map or not isinstance(row, Mapping):
        return row
    return {field_map.get(key, key): value for key, value in row.items()}


def normalise_row(row: Any, fmt: str) -> dict[str, Any]:
    """Turn one row of format ``fmt`` into a conversation (without ``source``); raise BadRow if it does not fit."""
    if not isinstance(row, Mapping):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}")
    conversation = _NORMALISERS[fmt](row)
    if not conversation.get("document"):
        check_conversation(conversation["messages"])
    tools = row.get("tools")
    if tools not in (None, "", []):
        conversation["tools"] = parse_tools(tools)
    return conversation


def check_conversation(messages: list[dict[str, Any]]) -> None:
    """The rules every conversation obeys, whatever its source format."""
    if not messages:
        raise BadRow("the conversation has no messages")
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRow("the conversation has no assistant turn, so there is nothing to train on")
    for position, message in enumerate(messages):
        if message["role"] == "assistant" and not message["content"].strip() and not message.get("tool_calls"):
            raise BadRow(f"message {position} (assistant) is empty")


# -- per-format normalisers -------------------------------------------------------------------


def _alpaca(row: Mapping[str, Any]) -> dict[str, Any]:
    instruction = _required_text(row, "instruction")
    extra_input = _optional_text(row, "input")
    output = _required_text(row, "output", allow_empty=True)
    if not output.strip():
        raise BadRow("'output' is empty")
    messages = []
    system = _optional_text(row, "system")
    if system:
        messages.append(make_message("system", system))
    history = row.get("history") or []
    if not isinstance(history, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in history):
        raise BadRow("'history' must be a list of [user, assistant] pairs")
    for user_text, assistant_text in history:
        messages += [
            make_message("user", as_text(user_text, "history")),
            make_message("assistant", as_text(assistant_text, "history")),
        ]
    prompt = f"{instruction}\n\n{extra_input}" if extra_input else instruction
    messages += [make_message("user", prompt), make_message("assistant", output)]
    return {"messages": messages}


def sharegpt_conversation(row: Mapping[str, Any]) -> dict[str, Any]:
    """The turns of a ShareGPT row (also the prompt and answer turns of ShareGPT preference pairs)."""
    turns = required(row, "conversations")
    if not isinstance(turns, list):
        raise BadRow(f"'conversations' must be a list, got {type(turns).__name__}")
    messages = []
    system = _optional_text(row, "system")
    if system:
        messages.append(make_message("system", system))
    for position, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise BadRow(f"turn {position} of 'conversations' needs the keys 'from' and 'value'")
        speaker = turn["from"]
        role = SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise BadRow(f"turn {position} has the unknown role {speaker!r}; known roles: {', '.join(SHAREGPT_ROLES)}")
        value = as_text(turn["value"], f"turn {position} 'value'")
        if speaker == "function_call":
            messages.append(make_message("assistant", "", tool_calls=[_tool_call_from_text(value, position)]))
        else:
            messages.append(make_message(role, value))
    return {"messages": messages}


def _openai(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"messages": openai_messages(required(row, "messages"), "messages")}


def _prompt_completion(row: Mapping[str, Any]) -> dict[str, Any]:
    prompt, completion = required(row, "prompt"), required(row, "completion")
    if isinstance(prompt, list) or isinstance(completion, list):
        # TRL's conversational prompt-completion: both columns are lists of messages
        return {"messages": openai_messages(prompt, "prompt") + openai_messages(completion, "completion")}
    prompt_text = as_text(prompt, "prompt")
    completion_text = as_text(completion, "completion")
    if not completion_text.strip():
        raise BadRow("'completion' is empty")
    return {"messages": [make_message("user", prompt_text), make_message("assistant", completion_text)]}


def _text(row: Mapping[str, Any]) -> dict[str, Any]:
    text = _required_text(row, "text", allow_empty=True)
    if not text.strip():
        raise BadRow("'text' is empty")
    return {"messages": [make_message("assistant", text)], "document": True}


_NORMALISERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "alpaca": _alpaca,
    "sharegpt": sharegpt_conversation,
    "openai": _openai,
    "prompt_completion": _prompt_completion,
    "text": _text,
}
REQUIRED_KEYS = {fmt: keys for fmt, keys in DETECTION_RULES}


def missing_keys(row: Mapping[str, Any], fmt: str) -> list[str]:
    return [key for key in REQUIRED_KEYS[fmt] if key not in row]


# -- helpers ----------------------------------------------------------------------------------


def make_message(role: str, content: str, tool_calls: list | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def as_text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, Mapping) and "text" in p for p in value):
        return "".join(str(p["text"]) for p in value)  # OpenAI content parts
    raise BadRow(f"{what} must be a string, got {type(value).__name__}")


def required(row: Mapping[str, Any], key: str) -> Any:
    """The value of a key the format needs; a row of the file without it is a bad row, not a crash."""
    if key not in row or row[key] is None:
        raise BadRow(f"missing the key {key!r}")
    return row[key]


def _required_text(row: Mapping[str, Any], key: str, allow_empty: bool = False) -> str:
    text = as_text(required(row, key), repr(key))
    if not allow_empty and not text.strip():
        raise BadRow(f"{key!r} is empty")
    return text


def _optional_text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    return "" if value is None else as_text(value, repr(key))


def openai_messages(messages: Any, column: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise BadRow(f"{column!r} must be a list of messages, got {type(messages).__name__}")
    result = []
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise BadRow(f"message {position} of {column!r} needs a 'role'")
        role = OPENAI_ROLES.get(message["role"]) if isinstance(message["role"], str) else None
        if role is None:
            raise BadRow(
                f"message {position} has the unknown role {message['role']!r}; known roles: {', '.join(OPENAI_ROLES)}"
            )
        tool_calls = [_normalise_tool_call(call, position) for call in message.get("tool_calls") or []]
        content = message.get("content")
        if content is None and not tool_calls:
            raise BadRow(f"message {position} ({role}) has no 'content'")
        text = "" if content is None else as_text(content, f"message {position} 'content'")
        result.append(make_message(role, text, tool_calls=tool_calls))
    return result


def _normalise_tool_call(call: Any, position: int) -> dict[str, Any]:
    function = call.get("function", call) if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise BadRow(f"message {position} has a tool call without a function name")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # keep the string: some datasets store free-form arguments
    return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}


def _tool_call_from_text(value: str, position: int) -> dict[str, Any]:
    try:
        call = json.loads(value)
    except json.JSONDecodeError as exc:
        raise BadRow(f"turn {position} (function_call) is not valid JSON: {exc.msg}") from None
    return _normalise_tool_call(call, position)


def parse_tools(tools: Any) -> list | str:
    if isinstance(tools, str):
        try:
            parsed = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise BadRow(f"'tools' is not valid JSON: {exc.msg}") from None
        tools = parsed
    if isinstance(tools, Mapping):
        tools = [tools]
    if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
        raise BadRow("'tools' must be a list of tool schemas (JSON objects)")
    return tools
