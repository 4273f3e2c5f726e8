"""The validation loss: the mean cross-entropy per trained token over the held-out rows.

One definition for the training's ``eval_loss`` and the evaluation plugin's loss
(``plugins.eval.metrics.token_loss``): the cross-entropy summed over every trained token (label
!= -100; position i predicts label i+1) of every row, divided by the number of those tokens.
The Trainer's own ``eval_loss`` is a mean of per-batch means, each weighted by the batch's rows,
which over-weights the tokens of sparse rows (packing leaves a last row with one short sample):
on ``tiny`` it read 7.118 where the per-token loss of the same weights was 7.073 (issue #16).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugins.data.encoding import IGNORE_INDEX

if TYPE_CHECKING:
    import numpy as np
    import torch


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed cross-entropy (fp32) of its trained tokens, and their count."""
    from torch.nn import functional

    targets = functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    losses = functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return losses.view(targets.shape).sum(-1), (targets != IGNORE_INDEX).sum(-1)


def token_mean(row_stats: np.ndarray) -> float:
    """The validation loss from ``[rows, 2]`` (summed loss, trained tokens) pairs; NaN without tokens."""
    tokens = float(row_stats[:, 1].sum())
    return float(row_stats[:, 0].sum(dtype="float64")) / tokens if tokens else float("nan")
