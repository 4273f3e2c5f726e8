"""The Ollama ``Modelfile`` next to a GGUF: TEMPLATE from the training chat template, stop tokens,
context length, system prompt and sampling parameters; plus ``ollama create`` when Ollama exists.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from entity_training import PluginError
from entity_training.memory import atomic_write_text
from plugins.export.chat_template import TurnFormat, analyze_chat_template
from plugins.export.gotemplate import go_string, ollama_template, render_go_template

SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
    {"role": "user", "content": "And 3 + 3?\nAnswer briefly."},
]


def build_modelfile(
    gguf_name: str,
    turn_format: TurnFormat,
    *,
    num_ctx: int,
    system_prompt: str | None = None,
    sampling: dict[str, Any] | None = None,
) -> str:
    """Modelfile text; ``gguf_name`` is relative to the Modelfile's folder."""
    template = ollama_template(turn_format)
    check_template_matches(template, turn_format)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    lines += [f"PARAMETER stop {go_string(token)}" for token in turn_format.end_of_turn_tokens]
    lines.append(f"PARAMETER num_ctx {int(num_ctx)}")
    for name, value in (sampling or {}).items():
        lines.append(f"PARAMETER {name} {value}")
    return "\n".join(lines) + "\n"


def write_modelfile(
    gguf_file: Path,
    tokenizer: Any,
    chat_template: str | None,
    *,
    num_ctx: int,
    system_prompt: str | None = None,
    sampling: dict[str, Any] | None = None,
) -> TurnFormat:
    """Write ``Modelfile`` next to ``gguf_file``, its TEMPLATE checked against the chat template (the
    tokenizer's when None); return the turn format it reproduces."""
    turn_format = analyze_chat_template(tokenizer, chat_template)
    text = build_modelfile(gguf_file.name, turn_format, num_ctx=num_ctx, system_prompt=system_prompt, sampling=sampling)
    atomic_write_text(gguf_file.parent / "Modelfile", text)
    return turn_format


def ollama_messages(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The data Ollama hands its template for a chat request."""
    return {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}


def check_template_matches(template: str, turn_format: TurnFormat) -> None:
    """Ollama's prompt for a sample chat must equal the training template's, byte for byte."""
    for messages in (SAMPLE_CONVERSATION, SAMPLE_CONVERSATION[1:2], SAMPLE_CONVERSATION[:3]):
        generation = messages[-1]["role"] != "assistant"
        expected = turn_format.render(messages, add_generation_prompt=generation)
        got = render_go_template(template, ollama_messages(messages))
        if got != expected:
            raise PluginError(f"the Ollama TEMPLATE renders {got!r}, but training used {expected!r}")


def sampling_parameters(generation: dict[str, Any] | None) -> dict[str, Any]:
    """Ollama PARAMETERs from the evaluation's generation settings (greedy -> temperature 0)."""
    if not generation:
        return {}
    if not generation.get("do_sample", False):
        return {"temperature": 0}
    params = {"temperature": generation.get("temperature"), "top_p": generation.get("top_p")}
    return {k: v for k, v in params.items() if v is not None}


def ollama_create(modelfile: Path, model_name: str, prompt: str, timeout_s: int = 600) -> dict[str, Any] | None:
    """Register the model with a local Ollama and run one prompt; None when Ollama is not installed."""
    binary = shutil.which("ollama")
    if binary is None:
        return None
    create = subprocess.run(
        [binary, "create", model_name, "-f", str(modelfile)],
        cwd=modelfile.parent,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if create.returncode != 0:
        raise PluginError(f"ollama create {model_name} failed: {(create.stderr or create.stdout)[-1000:]}")
    run = subprocess.run(
        [binary, "run", model_name, prompt], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if run.returncode != 0:
        raise PluginError(f"ollama run {model_name} failed: {(run.stderr or run.stdout)[-1000:]}")
    return {"model": model_name, "prompt": prompt, "reply": run.stdout.strip()}
