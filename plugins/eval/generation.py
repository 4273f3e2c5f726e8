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
    return generate_many(model, tokenizer, [prompt], settings, stop_ids)[0]


def generate_many(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    settings: dict[str, Any],
    stop_ids: list[int],
    *,
    batch_size: int = 8,
    on_batch: Any = None,
) -> list[Generated]:
    """Answers to ``prompts``, ``batch_size`` at a time (left-padded): on a CPU one decoding step
    costs about the same for 1 or 8 rows, so a batch of 8 answers about 6x faster than one by one.
    ``on_batch(done, total)`` is called after each batch; ``seconds`` is the batch's time shared out."""
    import torch

    device = next(model.parameters()).device
    answers: list[Generated] = []
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens must follow every prompt directly
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            encoded = tokenizer(batch, return_tensors="pt", padding=True).to(device)
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
            seconds = (time.perf_counter() - started) / len(batch)
            for row in output[:, encoded["input_ids"].shape[1] :].tolist():
                new = _until_stop(row, stop_ids)
                answers.append(Generated(tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), seconds))
            if on_batch is not None:
                on_batch(len(answers), len(prompts))
    finally:
        tokenizer.padding_side = padding_side
    return answers


def _until_stop(tokens: list[int], stop_ids: list[int]) -> list[int]:
    """The generated tokens up to and including the first stop token (what follows is padding)."""
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: i + 1]
    return tokens
