"""Evaluation metrics: masked token loss (as in training), perplexity, BLEU, ROUGE, exact match,
and the agreement of two models' answers.

BLEU and ROUGE use ``sacrebleu`` and ``rouge-score`` directly (``evaluate`` downloads code at run
time, which an offline machine cannot do).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any


def token_loss(
    model: Any,
    rows: Any,
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
    *,
    batch_size: int = 4,
    max_rows: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[float, int]:
    """Mean next-token cross-entropy over trained tokens only (labels != -100), and their count.

    Rows are the packed rows of ``plugins.data.tokenized``; the collator's block-diagonal mask and
    position ids keep packed samples apart exactly as in training.
    """
    import torch

    from plugins.training.validation_loss import row_losses

    device = next(model.parameters()).device
    count = min(len(rows), max_rows) if max_rows else len(rows)
    total_loss, total_tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, count, batch_size):
            batch = collator([rows[i] for i in range(start, min(start + batch_size, count))])
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            sums, counts = row_losses(model(**batch).logits, labels)
            total_loss += float(sums.sum(dtype=torch.float64))
            total_tokens += int(counts.sum())
            if on_batch:
                on_batch(min(start + batch_size, count), count)
    if total_tokens == 0:
        return float("nan"), 0
    return total_loss / total_tokens, total_tokens


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0)) if not math.isnan(loss) else float("nan")


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100), sacrebleu's default 13a tokenization."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (0-1)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for name in totals:
            totals[name] += scores[name].fmeasure
    return {name: value / max(1, len(predictions)) for name, value in totals.items()}


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Fraction of answers equal to the reference after trimming, lower-casing and collapsing spaces."""
    matches = sum(_normalise(p) == _normalise(r) for p, r in zip(predictions, references, strict=True))
    return matches / max(1, len(predictions))


def identical_rate(answers: list[str], references: list[str]) -> float:
    """Share of answers identical to the reference's after stripping surrounding whitespace."""
    same = sum(a.strip() == r.strip() for a, r in zip(answers, references, strict=True))
    return same / max(1, len(answers))


def first_words_rate(answers: list[str], references: list[str], words: int) -> float:
    """Share of answers whose first ``words`` words (split on whitespace) equal the reference's:
    a softer agreement that forgives a late divergence, e.g. from quantization."""
    same = sum(a.split()[:words] == r.split()[:words] for a, r in zip(answers, references, strict=True))
    return same / max(1, len(answers))


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())
