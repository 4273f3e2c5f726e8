"""The training's validation loss is the mean cross-entropy per trained token over the held-out
rows, the evaluation's definition, however the rows fall into batches (issue #16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.training import build_tiny_model_dir, packed_rows, packed_trainer

from plugins.data.collator import PackedCollator
from plugins.eval.metrics import token_loss
from plugins.training.chunked_loss import CHUNKED_LOSS_MIN_VOCAB
from plugins.training.validation_loss import row_losses, token_mean

# Two full rows, then a packed last row holding one short sample: the Trainer's mean of per-batch
# means gives the short sample's 7 tokens the weight of a full row's 96.
UNEVEN_ROWS = packed_rows(2, length=64, seed=3) + packed_rows(1, length=8, samples_per_row=1, seed=4)


def _trainer(model, tmp_path, rows, eval_batch_size: int):
    return packed_trainer(model, tmp_path, rows, per_device_eval_batch_size=eval_batch_size)


@pytest.mark.parametrize("vocab", [None, CHUNKED_LOSS_MIN_VOCAB], ids=["full-logits", "chunked"])
def test_uneven_batches_give_the_mean_per_trained_token(vocab, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model_dir(tmp_path / "model", hidden=32, vocab=vocab)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    collator = PackedCollator(pad_token_id=0)
    per_token, tokens = token_loss(model, UNEVEN_ROWS, collator, batch_size=1)
    batch_means, batch_rows = [], []
    for batch in ([UNEVEN_ROWS[0], UNEVEN_ROWS[1]], [UNEVEN_ROWS[2]]):
        loss, _ = token_loss(model, batch, collator, batch_size=len(batch))
        batch_means.append(loss)
        batch_rows.append(len(batch))
    rows_weighted = float(np.average(batch_means, weights=batch_rows))  # the Trainer's own eval_loss

    measured = _trainer(model, tmp_path, UNEVEN_ROWS, eval_batch_size=2).evaluate()["eval_loss"]

    assert tokens == 2 * 62 + 7
    assert measured == pytest.approx(per_token, rel=1e-5)
    assert abs(rows_weighted - per_token) > 100 * abs(measured - per_token)


def test_row_losses_and_their_mean():
    logits = torch.zeros(2, 4, 5)
    logits[0, 0, 3] = 10.0  # position 0 predicts label 1 almost surely
    labels = torch.tensor([[-100, 3, 1, -100], [-100, -100, -100, -100]])
    sums, counts = row_losses(logits, labels)
    expected = np.log(5) + np.log1p(4 * np.exp(-10))  # label 1 from uniform logits, label 3 from a sure one
    assert counts.tolist() == [2, 0]
    torch.testing.assert_close(sums, torch.tensor([expected, 0.0], dtype=torch.float32), atol=1e-6, rtol=0)
    assert token_mean(np.array([[6.0, 2.0], [1.0, 1.0]])) == pytest.approx(7.0 / 3.0)
    assert np.isnan(token_mean(np.zeros((2, 2))))
