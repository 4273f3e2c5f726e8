"""Packing: best-fit bins, the block-diagonal mask, and no attention or loss across samples."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from plugins.data.collator import PackedCollator
from plugins.data.encoding import IGNORE_INDEX
from plugins.data.packing import best_fit_decreasing, block_causal_mask, packing_efficiency, position_ids_for

LENGTHS = (7, 5, 9, 4, 11)
VOCAB = 64


@given(st.lists(st.integers(1, 50), max_size=60), st.integers(50, 80))
@settings(max_examples=60, deadline=None)
def test_bins_hold_every_sample_once_within_capacity(lengths, capacity):
    bins = best_fit_decreasing(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    # Best fit never opens a bin while an existing one still has room for the sample: so at most
    # one bin is at most half full.
    assert sum(1 for b in bins if sum(lengths[i] for i in b) <= capacity / 2) <= 1


def test_best_fit_fills_tightest_bin():
    assert best_fit_decreasing([6, 5, 4, 3, 2], 10) == [[0, 2], [1, 3, 4]]
    assert packing_efficiency(20, 2, 10) == 1.0
    with pytest.raises(ValueError, match="does not fit"):
        best_fit_decreasing([11], 10)


def test_positions_restart_and_mask_is_block_diagonal():
    assert position_ids_for([3, 2]).tolist() == [0, 1, 2, 0, 1]
    mask = block_causal_mask([[2, 1]], 4)[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],  # the second sample sees only itself
        [0, 0, 0, 1],  # padding attends to itself: no empty softmax row
    ]


def test_collator_pads_to_the_longest_row():
    rows = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 0], "seq_lengths": [2, 1]},
        {"input_ids": [8], "labels": [-100], "position_ids": [0], "seq_lengths": [1]},
    ]
    batch = PackedCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert batch["attention_mask"].shape == (2, 1, 3, 3) and batch["attention_mask"].dtype == torch.bool
    float_mask = PackedCollator(pad_token_id=0, attn_implementation="eager")(rows)["attention_mask"]
    assert float_mask[0, 0, 2, 0] == torch.finfo(torch.float32).min and float_mask[0, 0, 1, 0] == 0
    varlen = PackedCollator(pad_token_id=0, attn_implementation="flash_attention_2")(rows)
    assert "attention_mask" not in varlen and varlen["position_ids"].tolist() == [[0, 1, 0], [0, 1, 2]]


def tiny_llama(attn_implementation: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    config._attn_implementation = attn_implementation
    return LlamaForCausalLM(config).eval()


def packed_rows(samples: list[torch.Tensor], capacity: int) -> list[dict]:
    rows = []
    for bin_ in best_fit_decreasing([len(s) for s in samples], capacity):
        members = [samples[i] for i in bin_]
        labels = [[IGNORE_INDEX, *s[1:].tolist()] for s in members]  # first token of each sample never a target
        rows.append(
            {
                "input_ids": torch.cat(members).tolist(),
                "labels": [t for sample in labels for t in sample],
                "position_ids": position_ids_for([len(s) for s in members]).tolist(),
                "seq_lengths": [len(s) for s in members],
            }
        )
    return rows


def summed_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the next-token losses (labels shifted by one, -100 ignored), as the model computes them."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_packed_loss_equals_the_per_sample_losses(attn_implementation):
    torch.manual_seed(1)
    model = tiny_llama(attn_implementation)
    samples = [torch.randint(3, VOCAB, (n,)) for n in LENGTHS]
    batch = PackedCollator(pad_token_id=0, attn_implementation=attn_implementation)(packed_rows(samples, capacity=20))
    assert batch["input_ids"].shape[0] < len(samples)  # several samples really share rows
    with torch.no_grad():
        separate = sum(summed_token_loss(model(input_ids=s[None]).logits, s[None]) for s in samples)
        packed_logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=batch["attention_mask"]
        ).logits
        packed = summed_token_loss(packed_logits, batch["labels"])
        mean_loss = model(**batch).loss  # the model's own loss: mean over the trained tokens
    trained = sum(len(s) - 1 for s in samples)
    assert torch.isfinite(packed_logits).all()
    assert packed.item() == pytest.approx(separate.item(), rel=1e-5, abs=1e-5)
    assert mean_loss.item() == pytest.approx(separate.item() / trained, rel=1e-5)


def test_position_ids_alone_do_not_isolate_samples():
    """Why the collator builds a mask: restarting positions still lets sample 2 attend to sample 1."""
    torch.manual_seed(1)
    model = tiny_llama("sdpa")
    first, second = torch.randint(3, VOCAB, (7,)), torch.randint(3, VOCAB, (5,))
    with torch.no_grad():
        alone = model(input_ids=second[None]).logits[0]
        positions = torch.from_numpy(position_ids_for([7, 5]))[None]
        unmasked = model(input_ids=torch.cat([first, second])[None], position_ids=positions).logits[0, 7:]
        row = packed_rows([first, second], capacity=12)
        masked = model(**{k: v for k, v in PackedCollator(0)(row).items() if k != "labels"}).logits[0]
    order = best_fit_decreasing([7, 5], 12)[0]
    second_start = 7 if order == [0, 1] else 0
    assert (unmasked - alone).abs().max() > 1e-2
    assert (masked[second_start : second_start + 5] - alone).abs().max() < 1e-5


def test_eager_attention_needs_the_additive_mask():
    """Eager attention adds the mask to the scores: a boolean mask is silently wrong there."""
    torch.manual_seed(1)
    model = tiny_llama("eager")
    samples = [torch.randint(3, VOCAB, (n,)) for n in (6, 5)]
    rows = packed_rows(samples, capacity=11)
    with torch.no_grad():
        alone = torch.cat([model(input_ids=samples[i][None]).logits[0] for i in best_fit_decreasing([6, 5], 11)[0]])

        def logits(attn_implementation: str) -> torch.Tensor:
            batch = PackedCollator(0, attn_implementation=attn_implementation)(rows)
            return model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]

        assert (logits("eager") - alone).abs().max() < 1e-5
        assert (logits("sdpa") - alone).abs().max() > 1e-2  # the boolean form, fed to eager attention
