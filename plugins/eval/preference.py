"""Preference evaluation: how the tuned model and its starting point rank held-out answers.

Each sequence's log-probability is taken over its answer tokens only (the labels the data
preparation set; position i predicts label i+1), as preference training scores it.

Per model (``model_figures``):
- pairs: ``preference_accuracy``, the share of pairs whose chosen answer has the higher mean
  log-probability per answer token (a tie counts as not preferred), and ``preference_margin``, the
  mean of (chosen - rejected) per-token log-probabilities. The per-token mean is the headline (and
  what the thresholds read) because a chosen and a rejected answer often differ in length, and a
  sum favours the shorter one; the summed figures (``*_summed``) are reported beside it, being
  what DPO itself compares;
- unpaired (KTO) completions: the mean per-token log-probability of the desirable and of the
  undesirable ones, and ``preference_margin``, desirable minus undesirable.

Tuned vs start (``reward_figures``): DPO's implicit reward of a sequence is
beta x (log p_tuned - log p_start) summed over its answer tokens. For pairs, ``reward_accuracy``
is the share of pairs whose chosen answer gained more reward than the rejected one and
``reward_margin`` the mean reward difference; for completions, the share of desirable ones whose
log-probability rose and of undesirable ones whose log-probability fell, and ``moved_right``, the
share of all completions that moved the way their label asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from plugins.data.preference_tokenized import PARTS, PreferenceDataset

if TYPE_CHECKING:
    from plugins.eval.prompts import ChatPrompt

DEFAULT_BETA = 0.1  # preference_training's default; used when no preference_training step says otherwise


@dataclass(frozen=True)
class SequenceScores:
    """Per example and part (chosen, rejected; or completion): summed answer log-probability and token count."""

    sums: np.ndarray  # [examples, parts] float64
    counts: np.ndarray  # [examples, parts] int64
    desirable: np.ndarray | None = None  # [examples] bool, unpaired data only

    @property
    def means(self) -> np.ndarray:
        return self.sums / np.maximum(self.counts, 1)


def score_sequences(
    model: Any,
    split: PreferenceDataset,
    *,
    pad_token_id: int,
    batch_size: int,
    max_examples: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> SequenceScores:
    """The answer log-probabilities of every part of the first ``max_examples`` examples of ``split``."""
    import torch

    from plugins.training.chunked_loss import chunked_row_losses, split_for_chunked_loss
    from plugins.training.preference.batches import PreferenceCollator
    from plugins.training.validation_loss import row_losses

    total = min(len(split), max_examples or len(split))
    collate = PreferenceCollator(pad_token_id=pad_token_id)
    parts = len(PARTS[split.task])
    split_model = split_for_chunked_loss(model)
    device = next(model.parameters()).device
    sums, counts = [], []
    with torch.no_grad():
        for start in range(0, total, batch_size):
            batch = collate([split[i] for i in range(start, min(start + batch_size, total))])
            input_ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            if split_model is not None:
                hidden = split_model.decoder(input_ids=input_ids).last_hidden_state
                losses, tokens = chunked_row_losses(hidden, split_model.head, labels, split_model.tokens_per_chunk)
            else:
                losses, tokens = row_losses(model(input_ids=input_ids).logits, labels)
            # The batch's rows are part after part: [parts * examples] -> [examples, parts].
            sums.append((-losses).double().cpu().numpy().reshape(parts, -1).T)
            counts.append(tokens.cpu().numpy().reshape(parts, -1).T)
            if on_batch is not None:
                on_batch(min(start + batch_size, total), total)
    desirable = np.asarray(split.desirable[:total], dtype=bool) if split.desirable is not None else None
    return SequenceScores(
        np.concatenate(sums) if sums else np.zeros((0, parts)),
        np.concatenate(counts) if counts else np.zeros((0, parts), np.int64),
        desirable,
    )


def model_figures(scores: SequenceScores) -> dict[str, Any]:
    """One model's figures (see the module docstring); None where there is nothing to average."""
    if scores.desirable is not None:
        means = scores.means[:, 0]
        desirable, undesirable = _mean(means[scores.desirable]), _mean(means[~scores.desirable])
        margin = desirable - undesirable if desirable is not None and undesirable is not None else None
        return {"desirable_logp": desirable, "undesirable_logp": undesirable, "preference_margin": margin}
    mean_gap = scores.means[:, 0] - scores.means[:, 1]
    sum_gap = scores.sums[:, 0] - scores.sums[:, 1]
    return {
        "preference_accuracy": _mean(mean_gap > 0),
        "preference_margin": _mean(mean_gap),
        "preference_accuracy_summed": _mean(sum_gap > 0),
        "preference_margin_summed": _mean(sum_gap),
        "chosen_logp": _mean(scores.means[:, 0]),
        "rejected_logp": _mean(scores.means[:, 1]),
    }


def reward_figures(tuned: SequenceScores, start: SequenceScores, beta: float) -> dict[str, Any]:
    """The tuned model against its start (see the module docstring)."""
    change = tuned.sums - start.sums  # the log-ratio of each sequence, summed over its answer tokens
    if tuned.desirable is not None:
        desirable = tuned.desirable
        rose, fell = change[:, 0] > 0, change[:, 0] < 0
        return {
            "desirable_rose": _mean(rose[desirable]),
            "undesirable_fell": _mean(fell[~desirable]),
            "moved_right": _mean(np.where(desirable, rose, fell)),
            "beta": beta,
            "desirable_reward": _mean(beta * change[desirable, 0]),
            "undesirable_reward": _mean(beta * change[~desirable, 0]),
        }
    rewards = beta * change
    return {
        "beta": beta,
        "reward_accuracy": _mean(rewards[:, 0] > rewards[:, 1]),
        "reward_margin": _mean(rewards[:, 0] - rewards[:, 1]),
        "chosen_reward": _mean(rewards[:, 0]),
        "rejected_reward": _mean(rewards[:, 1]),
    }


def preference_prompts(
    rows: list[dict[str, Any]], tokenizer: Any, chat_template: str | None, count: int
) -> list[ChatPrompt]:
    """Up to ``count`` prompts of held-out preference rows (their prompt turns rendered with the
    chat template), each with the chosen answer, or a desirable completion, as its reference."""
    from plugins.eval.prompts import render_chat_prompt

    prompts = []
    for row in rows:
        if len(prompts) == count:
            break
        answer = row.get("chosen") or (row.get("completion") if row.get("desirable") else None)
        if not answer or not row.get("messages"):
            continue
        reference = "\n".join(str(message.get("content") or "") for message in answer)
        prompts.append(render_chat_prompt(row["messages"], tokenizer, chat_template, reference, row.get("tools")))
    return prompts


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None
