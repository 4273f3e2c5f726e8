"""Take a Jinja chat template apart into per-role text around each message's content.

Other runtimes (Ollama's Go templates) cannot run Jinja, so we render the training template on
probe conversations and read off, for each role, the text before and after the content, the
generation prompt and any header. The result is checked by rebuilding the template's output
for several conversations: a template that is not "header + one chunk per message + generation
prompt" is refused rather than approximated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from entity_training import ConfigError, Problem

ROLES = ("system", "user", "assistant", "tool")
_MARK = "\x00{}\x00"  # a content marker no template will produce by itself


@dataclass(frozen=True)
class TurnFormat:
    """How the template lays out a conversation."""

    prefixes: dict[str, str]  # role -> text before the content
    suffixes: dict[str, str]  # role -> text after the content
    generation_prompt: str  # appended after the last message when a reply is wanted
    header: str = ""  # always at the very start (e.g. a BOS written by the template)
    default_system: str = ""  # injected after the header when the first message is not a system one
    end_of_turn_tokens: list[str] = field(default_factory=list)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        """What the original template renders for plain-text ``messages``."""
        parts = [self.header]
        if not messages or messages[0]["role"] != "system":
            parts.append(self.default_system)
        for message in messages:
            role = message["role"]
            parts += [self.prefixes[role], message["content"], self.suffixes[role]]
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)


def analyze_chat_template(tokenizer: Any, chat_template: str | None = None) -> TurnFormat:
    """Split ``chat_template`` (default: the tokenizer's) into a TurnFormat, verified on probes."""
    template = chat_template or tokenizer.chat_template
    if not template:
        raise ConfigError(
            Problem(
                "the tokenizer has no chat template, so no Modelfile TEMPLATE can be derived.", path="export_formats"
            )
        )

    def render(messages: list[dict[str, Any]], generation: bool = False) -> str:
        return tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=generation
        )

    def msg(role: str, index: int) -> dict[str, str]:
        return {"role": role, "content": _MARK.format(f"{role}{index}")}

    try:
        header = render([])
    except Exception:  # some templates refuse an empty conversation
        header = ""
    probe = [msg("system", 0), msg("user", 1), msg("assistant", 2), msg("user", 3), msg("assistant", 4)]
    try:
        prefixes, suffixes = _split_turns(render, probe, header)
    except ValueError as exc:
        raise _untranslatable(str(exc)) from exc
    tool_probe = probe + [msg("tool", 5), msg("assistant", 6)]
    try:
        tool_prefixes, tool_suffixes = _split_turns(render, tool_probe, header)
        prefixes["tool"], suffixes["tool"] = tool_prefixes["tool"], tool_suffixes["tool"]
    except Exception:
        pass  # the template has no tool role (it raised or dropped the message)
    first_user = render([msg("user", 1)])
    default_system = first_user[len(header) : first_user.index(prefixes["user"] + _MARK.format("user1"))]
    conversation = probe[1:3]
    generation = render(conversation, True)[len(render(conversation)) :]
    turn_format = TurnFormat(
        prefixes=prefixes,
        suffixes=suffixes,
        generation_prompt=generation,
        header=header,
        default_system=default_system,
        end_of_turn_tokens=_end_of_turn_tokens(tokenizer, suffixes["assistant"]),
    )
    _check_equivalence(turn_format, render)
    return turn_format


def _split_turns(render: Any, probe: list[dict[str, str]], header: str) -> tuple[dict[str, str], dict[str, str]]:
    """Each message's chunk is what rendering it adds; split the chunk around the content marker."""
    prefixes: dict[str, str] = {}
    suffixes: dict[str, str] = {}
    previous = header
    for count in range(1, len(probe) + 1):
        text = render(probe[:count])
        if not text.startswith(previous):
            raise ValueError("the template rewrites earlier turns")
        chunk, previous = text[len(previous) :], text
        message = probe[count - 1]
        before, found, after = chunk.partition(message["content"])
        if not found:
            raise ValueError(f"the template drops {message['role']} messages")
        role = message["role"]
        if count > 1 or role == "system":  # the first user turn may carry a default system prompt
            prefixes.setdefault(role, before)
        suffixes.setdefault(role, after)
    return prefixes, suffixes


def _end_of_turn_tokens(tokenizer: Any, text_after_reply: str) -> list[str]:
    """Special tokens that close an assistant turn, plus EOS: the stop tokens of an exported model."""
    special = sorted(set(tokenizer.all_special_tokens), key=len, reverse=True)
    found = [token for token in special if token and token in text_after_reply]
    eos = tokenizer.eos_token
    if eos and eos not in found:
        found.append(eos)
    return found


def _check_equivalence(turn_format: TurnFormat, render: Any) -> None:
    conversations = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2\nline two"},
        ],
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
    ]
    for messages in conversations:
        for generation in (True, False):
            if turn_format.render(messages, generation) != render(messages, generation):
                raise _untranslatable("it depends on the position of a message")


def _untranslatable(reason: str) -> ConfigError:
    return ConfigError(
        Problem(
            f"the training chat template cannot be expressed as fixed text around each message ({reason}), "
            "so no exact Ollama TEMPLATE can be derived. Remove 'ollama' from export_formats; the GGUF "
            "file itself carries the Jinja template for llama.cpp.",
            path="export_formats",
        )
    )
