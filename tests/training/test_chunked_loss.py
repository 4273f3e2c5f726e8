"""The chunked cross-entropy for large vocabularies gives the model's own loss and gradients,
without materialising the [batch, length, vocab] logits."""

from __future__ import annotations

import pytest
import torch
from helpers.training import build_tiny_model_dir, packed_rows, packed_trainer

from plugins.data.collator import PackedCollator
from plugins.training.chunked_loss import (
    CHUNKED_LOSS_MIN_VOCAB,
    chunked_causal_lm_loss,
    chunked_row_losses,
    split_for_chunked_loss,
)
from plugins.training.validation_loss import row_losses


@pytest.fixture(scope="module")
def large_vocab_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model_dir(tmp_path_factory.mktemp("large-vocab"), hidden=32, vocab=CHUNKED_LOSS_MIN_VOCAB)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


@pytest.fixture(scope="module")
def batch():
    return PackedCollator(pad_token_id=0)(packed_rows(3, length=96, samples_per_row=3))


def gradients(model) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


class Recomputed(torch.nn.Module):
    """An output layer that is not a plain nn.Linear: the loss takes the recomputing path."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, states):
        return self.linear(states)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "recomputed"])
@pytest.mark.parametrize("num_items", [None, 57])
def test_loss_and_gradients_equal_the_models_own(large_vocab_model, batch, num_items, fused):
    model = large_vocab_model
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    plain = model(**batch, **extra).loss
    plain.backward()
    expected = gradients(model)

    split = split_for_chunked_loss(model)
    head = split.head if fused else Recomputed(split.head)
    features = {name: value for name, value in batch.items() if name != "labels"}
    hidden = split.decoder(**features).last_hidden_state
    # Chunks of 50 tokens: several chunks and a ragged last one.
    chunked = chunked_causal_lm_loss(hidden, head, batch["labels"], extra.get("num_items_in_batch"), 50)
    chunked.backward()
    got = gradients(model)

    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-6)
    assert got.keys() == expected.keys() and "lm_head.weight" in got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("fused", [True, False], ids=["plain-head", "wrapped-head"])
def test_row_losses_in_chunks_equal_those_of_the_full_logits(large_vocab_model, batch, fused):
    split = split_for_chunked_loss(large_vocab_model)
    head = split.head if fused else Recomputed(split.head)
    features = {name: value for name, value in batch.items() if name != "labels"}
    labels = batch["labels"].clone()
    labels[1] = -100  # a row without trained tokens
    with torch.no_grad():
        expected_sums, expected_counts = row_losses(large_vocab_model(**features).logits, labels)
        hidden = split.decoder(**features).last_hidden_state
        sums, counts = chunked_row_losses(hidden, head, labels, 50)
    assert counts.tolist() == expected_counts.tolist() and counts[1] == 0 and counts.sum() > 100
    torch.testing.assert_close(sums, expected_sums, rtol=1e-5, atol=1e-4)
    # Summed over the batch, the model's own mean loss per trained token.
    plain = large_vocab_model(**features, labels=labels).loss
    torch.testing.assert_close(sums.sum() / counts.sum(), plain, rtol=1e-5, atol=1e-6)


def test_a_batch_without_trained_tokens_still_backpropagates(large_vocab_model, batch):
    split = split_for_chunked_loss(large_vocab_model)
    features = {name: value for name, value in batch.items() if name != "labels"}
    hidden = split.decoder(**features).last_hidden_state
    loss = chunked_causal_lm_loss(hidden, split.head, torch.full_like(batch["labels"], -100), 10, 50)
    loss.backward()
    assert loss.item() == 0.0
    large_vocab_model.zero_grad(set_to_none=True)


def test_peft_models_train_the_saved_output_layer_through_the_fused_path(large_vocab_model, batch):
    import copy

    from peft import LoraConfig, get_peft_model

    from plugins.training.linear_cross_entropy import plain_linear

    peft_model = get_peft_model(
        copy.deepcopy(large_vocab_model), LoraConfig(r=4, target_modules="all-linear", modules_to_save=["lm_head"])
    )
    split = split_for_chunked_loss(peft_model)
    trained_head = peft_model.get_base_model().lm_head.modules_to_save["default"]
    assert plain_linear(split.head) is trained_head
    plain = peft_model(**batch).loss
    plain.backward()
    expected = gradients(peft_model)
    features = {name: value for name, value in batch.items() if name != "labels"}
    hidden = split.decoder(**features).last_hidden_state
    chunked_causal_lm_loss(hidden, split.head, batch["labels"], None, 64).backward()
    got = gradients(peft_model)
    assert got.keys() == expected.keys() and any("modules_to_save" in name for name in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-7, msg=name)


def test_small_vocabularies_and_post_processed_logits_keep_the_models_loss(tmp_path, large_vocab_model):
    from transformers import AutoModelForCausalLM

    small = AutoModelForCausalLM.from_pretrained(build_tiny_model_dir(tmp_path / "small"))
    assert split_for_chunked_loss(small) is None
    large_vocab_model.config.final_logit_softcapping = 30.0
    try:
        assert split_for_chunked_loss(large_vocab_model) is None
    finally:
        large_vocab_model.config.final_logit_softcapping = None


def test_packed_trainer_trains_and_evaluates_through_the_chunked_loss(large_vocab_model, tmp_path, monkeypatch):
    import copy

    from plugins.training import trainer as trainer_module

    calls = []

    def counted(function):
        def call(*args, **kwargs):
            calls.append((function.__name__, torch.is_grad_enabled()))
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(trainer_module, "chunked_causal_lm_loss", counted(chunked_causal_lm_loss))
    monkeypatch.setattr(trainer_module, "chunked_row_losses", counted(chunked_row_losses))
    rows = packed_rows(4, length=64)
    trainer = packed_trainer(
        copy.deepcopy(large_vocab_model), tmp_path, rows, train=True,
        per_device_train_batch_size=2, max_steps=4, learning_rate=1e-2,
    )  # fmt: skip
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before
    evaluation, step = ("chunked_row_losses", False), ("chunked_causal_lm_loss", True)
    assert calls == [evaluation] + [step] * 4 + [evaluation]  # one batch of 4 rows, 4 steps, one batch


def test_chunks_hold_a_bounded_amount_of_logits():
    from plugins.training.chunked_loss import CHUNK_LOGITS_BYTES, MIN_CHUNK_TOKENS, chunk_tokens

    assert chunk_tokens(32_000) * 32_000 * 4 <= CHUNK_LOGITS_BYTES
    assert chunk_tokens(128_256) < chunk_tokens(32_000)
    assert chunk_tokens(10**7) == MIN_CHUNK_TOKENS
