"""Prompts for evaluation and verification, rendered with the exact chat template used in training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FALLBACK_CONVERSATIONS = [
    [{"role": "user", "content": "Hello! Who are you?"}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "Write one sentence about the sea."}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "List three colours."}, {"role": "assistant", "content": ""}],
]


@dataclass(frozen=True)
class ChatPrompt:
    messages: list[dict[str, Any]]  # the conversation up to (not including) the answer
    text: str  # rendered with the generation prompt
    reference: str  # the dataset's answer ("" for the fallback prompts)
    tools: Any = None


def chat_prompts(
    conversations: list[dict[str, Any]] | None, tokenizer: Any, chat_template: str | None, count: int
) -> list[ChatPrompt]:
    """Up to ``count`` prompts: each conversation cut before its last assistant turn.

    Conversations without an assistant turn are skipped; with no usable data, a few generic
    prompts keep verification possible.
    """
    prompts = []
    for conversation in conversations or []:
        messages = conversation.get("messages", [])
        last = max(
            (i for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("content")), default=None
        )
        if last is None or last == 0:
            continue
        prompts.append(
            render_chat_prompt(
                messages[:last], tokenizer, chat_template, messages[last]["content"], conversation.get("tools")
            )
        )
        if len(prompts) == count:
            return prompts
    if not prompts:
        prompts = [render_chat_prompt(c[:1], tokenizer, chat_template) for c in FALLBACK_CONVERSATIONS[:count]]
    return prompts


def render_chat_prompt(
    messages: list[dict[str, Any]], tokenizer: Any, chat_template: str | None, reference: str = "", tools: Any = None
) -> ChatPrompt:
    """``messages`` rendered with ``chat_template`` and the generation prompt, ready to answer."""
    options = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(
        messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True, **options
    )
    return ChatPrompt(messages=messages, text=text, reference=reference, tools=tools)
