"""Write conversations back out in a dataset format (the inverse of ``formats.normalise_row``)."""

from __future__ import annotations

import json
from typing import Any

from plugins.data.preference_formats import task_of_conversation

OUTPUT_FORMATS = ("openai", "sharegpt", "alpaca")
_SHAREGPT_SPEAKERS = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


class NotConvertible(ValueError):
    """The conversation has something the target format cannot hold (e.g. tool calls in alpaca)."""


def to_format(conversation: dict[str, Any], fmt: str) -> dict[str, Any]:
    """One output row of format ``fmt`` (openai, sharegpt or alpaca)."""
    task = task_of_conversation(conversation)
    if task != "sft":
        row = _preference_row(conversation, fmt, task)
    elif fmt == "openai":
        row: dict[str, Any] = {"messages": conversation["messages"]}
    elif fmt == "sharegpt":
        row = {"conversations": [turn for m in conversation["messages"] for turn in _sharegpt_turns(m)]}
    elif fmt == "alpaca":
        row = _alpaca_row(conversation)
    else:
        raise ValueError(f"unknown output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    if conversation.get("tools"):
        row["tools"] = conversation["tools"] if fmt == "openai" else json.dumps(conversation["tools"])
    return row


def _preference_row(conversation: dict[str, Any], fmt: str, task: str) -> dict[str, Any]:
    """Pairs as openai_pairs or sharegpt_pairs rows, KTO rows as kto_messages rows."""
    if task == "unpaired" and fmt == "openai":
        return {"messages": conversation["messages"] + conversation["completion"], "label": conversation["desirable"]}
    if task == "preference" and fmt == "openai":
        return {key: conversation[key] for key in ("messages", "chosen", "rejected")}
    if task == "preference" and fmt == "sharegpt":
        turns = {
            key: [t for m in conversation[key] for t in _sharegpt_turns(m)]
            for key in ("messages", "chosen", "rejected")
        }
        answers = {key: value[0] if len(value) == 1 else value for key, value in turns.items() if key != "messages"}
        return {"conversations": turns["messages"], **answers}
    raise NotConvertible(f"{fmt} cannot hold {task} rows; use openai")


def _sharegpt_turns(message: dict[str, Any]) -> list[dict[str, str]]:
    turns = []
    if message["content"] or not message.get("tool_calls"):
        turns.append({"from": _SHAREGPT_SPEAKERS[message["role"]], "value": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call["function"]
        turns.append(
            {
                "from": "function_call",
                "value": json.dumps({"name": function["name"], "arguments": function["arguments"]}),
            }
        )
    return turns


def _alpaca_row(conversation: dict[str, Any]) -> dict[str, Any]:
    messages = list(conversation["messages"])
    if conversation.get("tools") or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
        raise NotConvertible("alpaca cannot hold tool calls or tool results; use openai or sharegpt")
    system = messages.pop(0)["content"] if messages and messages[0]["role"] == "system" else ""
    roles = [m["role"] for m in messages]
    if len(messages) % 2 or roles != ["user", "assistant"] * (len(messages) // 2):
        raise NotConvertible("alpaca needs alternating user/assistant turns (an optional system message first)")
    pairs = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages), 2)]
    row: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
    if system:
        row["system"] = system
    if len(pairs) > 1:
        row["history"] = [list(pair) for pair in pairs[:-1]]
    return row
