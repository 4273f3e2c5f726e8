"""A short full-parameter causal-LM pretraining pass: what turns random weights into a base model."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int, float], None]  # (step, total steps, loss)


@dataclass(frozen=True)
class PretrainSchedule:
    steps: int
    batch_size: int
    seq_len: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float = 0.1
    final_lr_ratio: float = 0.1


def token_stream(tokenizer, documents: list[str], separator_id: int) -> torch.Tensor:
    """All documents tokenized and concatenated, each followed by ``separator_id``."""
    import torch

    ids: list[int] = []
    for encoded in tokenizer.backend_tokenizer.encode_batch(documents, add_special_tokens=False):
        ids.extend(encoded.ids)
        ids.append(separator_id)
    return torch.tensor(ids, dtype=torch.long)


def _windows(stream: torch.Tensor, starts: torch.Tensor, seq_len: int) -> torch.Tensor:
    import torch

    return torch.stack([stream[start : start + seq_len] for start in starts.tolist()])


def _lr_factor(schedule: PretrainSchedule) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < schedule.warmup_steps:
            return (step + 1) / schedule.warmup_steps
        progress = (step - schedule.warmup_steps) / max(1, schedule.steps - schedule.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return schedule.final_lr_ratio + (1 - schedule.final_lr_ratio) * cosine

    return factor


def pretrain(
    model: torch.nn.Module,
    stream: torch.Tensor,
    schedule: PretrainSchedule,
    *,
    seed: int,
    progress: ProgressCallback | None = None,
) -> list[float]:
    """Train ``model`` on random windows of ``stream``; returns the loss of every step.

    Deterministic for a given seed on a given machine: the windows come from a seeded generator.
    """
    import torch

    if len(stream) <= schedule.seq_len:
        raise ValueError(f"the pretraining text has {len(stream)} tokens, fewer than one window")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=schedule.learning_rate, betas=(0.9, 0.95), weight_decay=schedule.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(schedule))
    losses = []
    model.train()
    for step in range(1, schedule.steps + 1):
        starts = torch.randint(0, len(stream) - schedule.seq_len, (schedule.batch_size,), generator=generator)
        batch = _windows(stream, starts, schedule.seq_len)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress is not None:
            progress(step, schedule.steps, losses[-1])
    model.eval()
    return losses


def held_out_loss(model: torch.nn.Module, stream: torch.Tensor, seq_len: int, windows: int = 32) -> float:
    """Mean loss on evenly spaced windows of text the model was not trained on."""
    import torch

    seq_len = min(seq_len, len(stream) - 1)
    count = max(1, min(windows, (len(stream) - 1) // seq_len))
    starts = torch.linspace(0, len(stream) - seq_len - 1, count).long()
    batch = _windows(stream, starts, seq_len)
    with torch.no_grad():
        return model(input_ids=batch, labels=batch).loss.item()
