"""Chat templates: the built-in named ones, choosing one from the config, and rendering.

Each built-in renders system/user/assistant/tool messages, assistant ``tool_calls`` and a
``tools`` list, so that tool-calling data (e.g. glaive) trains with any of them. Every line of
a template ends with a ``%}`` tag: transformers compiles templates with ``trim_blocks``, so the
source's own line breaks never reach the output.
"""

from __future__ import annotations

from typing import Any

from entity_training import ConfigError, InputError, Problem
from plugins.data.readers import problem_at

_TOOL_CALLS = (
    "{% if message.tool_calls %}{% for call in message.tool_calls %}"
    "{% if not loop.first or message.content %}{{ '\\n' }}{% endif %}"
    "{{ '<tool_call>\\n' + ({'name': call.function.name, 'arguments': call.function.arguments} | tojson) + '\\n</tool_call>' }}"
    "{% endfor %}{% endif %}"
)
_TOOLS_LIST = "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"

CHATML = (
    "{% set ns = namespace(first=0) %}\n"
    "{% if messages and messages[0].role == 'system' %}{% set ns.first = 1 %}{% endif %}\n"
    "{% if tools or ns.first %}{{ '<|im_start|>system\\n' }}"
    "{% if ns.first %}{{ messages[0].content }}{% endif %}"
    "{% if tools %}{% if ns.first %}{{ '\\n\\n' }}{% endif %}{{ 'You can call these tools:\\n<tools>' }}"
    + _TOOLS_LIST
    + "{{ '\\n</tools>' }}{% endif %}{{ '<|im_end|>\\n' }}{% endif %}\n"
    "{% for message in messages[ns.first:] %}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content }}"
    + _TOOL_CALLS
    + "{{ '<|im_end|>\\n' }}{% endfor %}\n"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}\n"
)

LLAMA3 = (
    "{{ bos_token }}{% if tools %}"
    "{{ '<|start_header_id|>system<|end_header_id|>\\n\\nYou can call these tools:' }}"
    + _TOOLS_LIST
    + "{{ '<|eot_id|>' }}{% endif %}\n"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + ('ipython' if message.role == 'tool' else message.role) + '<|end_header_id|>\\n\\n' }}"
    "{{ message.content }}" + _TOOL_CALLS + "{{ '<|eot_id|>' }}{% endfor %}\n"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}\n"
)

ALPACA = (
    "{% if tools %}{{ '### Tools:' }}" + _TOOLS_LIST + "{{ '\\n\\n' }}{% endif %}\n"
    "{% for message in messages %}"
    "{% if message.role == 'system' %}{{ message.content + '\\n\\n' }}"
    "{% elif message.role == 'user' %}{{ '### Instruction:\\n' + message.content + '\\n\\n' }}"
    "{% elif message.role == 'tool' %}{{ '### Tool result:\\n' + message.content + '\\n\\n' }}"
    "{% else %}{{ '### Response:\\n' + message.content }}" + _TOOL_CALLS + "{{ eos_token + '\\n\\n' }}"
    "{% endif %}{% endfor %}\n"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}\n"
)

BUILTIN_TEMPLATES: dict[str, str] = {"chatml": CHATML, "llama3": LLAMA3, "alpaca": ALPACA}
TOKENIZER_TEMPLATE = "tokenizer"


def resolve_chat_template(option: str, tokenizer: Any) -> str:
    """The Jinja source for the ``chat_template`` option: the tokenizer's own, a built-in name, or inline Jinja."""
    if option == TOKENIZER_TEMPLATE:
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, dict):  # several named templates: the default one trains
            template = template.get("default")
        if not template:
            raise ConfigError(
                Problem(
                    f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template. Set chat_template "
                    f"to one of {', '.join(BUILTIN_TEMPLATES)} or to an inline Jinja template.",
                    path="chat_template",
                )
            )
        return template
    if option in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[option]
    if "{{" in option or "{%" in option:
        compile_template(option)  # fail early on a syntax error
        return option
    raise ConfigError(
        Problem(
            f"unknown chat template {option!r}; use 'tokenizer', one of {', '.join(BUILTIN_TEMPLATES)}, "
            "or an inline Jinja template.",
            path="chat_template",
        )
    )


def compile_template(source: str) -> Any:
    """Compile with the same Jinja environment (sandbox, filters, extensions) as transformers uses."""
    import jinja2
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        return _compile_jinja_template(source)
    except jinja2.TemplateError as exc:
        raise ConfigError(
            Problem(f"the chat template does not compile: {exc}. Fix its Jinja syntax.", path="chat_template")
        ) from None


class TemplateRenderer:
    """Renders conversations with one compiled template and the tokenizer's special tokens."""

    def __init__(self, source: str, tokenizer: Any):
        self.source = source
        self._compiled = compile_template(source)
        self._variables = {
            name: getattr(tokenizer, name, None) or "" for name in ("bos_token", "eos_token", "pad_token", "unk_token")
        }

    def __getstate__(self) -> dict[str, Any]:  # picklable for worker processes: recompile there
        return {"source": self.source, "variables": self._variables}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source, self._variables = state["source"], state["variables"]
        self._compiled = compile_template(self.source)

    @property
    def eos_token(self) -> str:
        return self._variables["eos_token"]

    @property
    def bos_token(self) -> str:
        return self._variables["bos_token"]

    def render(
        self, messages: list[dict], *, tools: Any = None, add_generation_prompt: bool = False, source: Any = None
    ) -> str:
        try:
            return self._compiled.render(
                messages=messages, tools=tools or None, add_generation_prompt=add_generation_prompt, **self._variables
            )
        except Exception as exc:  # a template may raise anything (raise_exception, TypeError on odd content)
            raise InputError(
                problem_at(
                    source,
                    f"the chat template failed to render this conversation: {type(exc).__name__}: {exc}. "
                    "The template may not support its roles or tool calls; choose another chat_template "
                    f"(e.g. {', '.join(BUILTIN_TEMPLATES)}) or fix the row.",
                )
            ) from None
