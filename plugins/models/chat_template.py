"""The ChatML template of the built-in models: system, user, assistant and tool turns.

``<|im_start|>role\\ncontent<|im_end|>\\n`` per message; an assistant's tool calls follow its
content as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks; tool definitions
passed as ``tools=`` are listed in the system turn. ``add_generation_prompt`` opens an assistant
turn. Plain Jinja (no transformers-only tags), so llama.cpp and Ollama can render it too.
"""

from __future__ import annotations

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END, PAD)
ROLES = ("system", "user", "assistant", "tool")

CHATML_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- 'You can call the tools listed in <tools></tools>. To call one, answer with '"
    ' + \'<tool_call>{"name": <tool name>, "arguments": <JSON object>}</tool_call>.\\n<tools>\\n\' }}'
    "{%- if tools is string %}{{- tools }}"
    "{%- else %}{%- for tool in tools %}{{- tool | tojson }}{%- if not loop.last %}{{- '\\n' }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (tools and loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- endif %}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{%- for call in message['tool_calls'] %}"
    "{%- set function = call['function'] if call['function'] is defined else call %}"
    "{%- if not loop.first or (message['content'] is string and message['content']) %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>{\"name\": \"' + function['name'] + '\", \"arguments\": ' }}"
    "{%- if function['arguments'] is string %}{{- function['arguments'] }}"
    "{%- else %}{{- function['arguments'] | tojson }}{%- endif %}"
    "{{- '}</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
