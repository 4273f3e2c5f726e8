"""Generate answers to chat prompts, stopping at the template's end-of-turn tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Generated:
    text: str
    new_tokens: int
    seconds: float


def stop_token_ids(tokenizer: Any, chat_template: str | None) -> list[int]:
    """Ids that end an assistant turn under the training template (falls back to EOS)."""
    from entity_training import ConfigError
    from plugins.export.chat_template import analyze_chat_template

    try:
        tokens = analyze_chat_template(tokenizer, chat_template).end_of_turn_tokens
    except (ConfigError, ValueError):
        tokens = [tokenizer.eos_token] if tokenizer.eos_token else []
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def generate(model: Any, tokenizer: Any, prompt: str, settings: dict[str, Any], stop_ids: list[int]) -> Generated:
    """One answer; ``settings`` holds max_new_tokens, do_sample, temperature, top_p, seed."""
    import torch

    device = next(model.parameters()).device
    encoded = tokenizer(prompt, return_tensors="pt").to(device)
    torch.manual_seed(int(settings.get("seed", 0)))
    options: dict[str, Any] = {
        "max_new_tokens": int(settings["max_new_tokens"]),
        "do_sample": bool(settings["do_sample"]),
    }
    if options["do_sample"]:
        options |= {"temperature": float(settings["temperature"]), "top_p": float(settings["top_p"])}
    started = time.perf_counter()
    with torch.no_grad():
        output = model.generate(
            **encoded, eos_token_id=stop_ids or None, pad_token_id=tokenizer.pad_token_id, **options
        )
    seconds = time.perf_counter() - started
    new = output[0, encoded["input_ids"].shape[1] :]
    return Generated(tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.shape[0]), seconds)
