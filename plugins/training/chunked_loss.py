"""Causal-LM cross-entropy in token chunks, so that [batch, length, vocab] logits never exist.

With a large vocabulary the logits dominate training memory: the model's own loss keeps the
logits, their fp32 copy, the saved log-softmax and the gradient, 4 x tokens x vocab x 4 bytes
(8 GiB at 8 x 512 tokens and a 128k vocabulary). Here the output layer runs on the trained
positions only, a chunk of tokens at a time (CHUNK_LOGITS_BYTES of logits), and its gradients
are computed right away (plugins/training/linear_cross_entropy.py): one chunk's logits are alive
at any moment. At vocabulary 8192 (`small`) it measured no faster (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from plugins.data.encoding import IGNORE_INDEX

if TYPE_CHECKING:  # torch is imported where it runs: the memory plan reads the constants without it
    import torch

# Vocabularies from this size up use the chunked loss (Llama 2's 32000 and every larger one).
CHUNKED_LOSS_MIN_VOCAB = 32_000
# One chunk's fp32 logits take at most this much (1024 tokens at 32k, 256 at 128k), but a chunk
# keeps enough tokens for the output layer's matrix multiply to run at speed.
CHUNK_LOGITS_BYTES = 128 * 2**20
MIN_CHUNK_TOKENS = 128
# Config attributes of models whose logits are post-processed after the output layer
# (Gemma 2's soft-capping, Cohere's logit scale): their loss stays the model's own.
_LOGIT_POST_PROCESSING = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


@dataclass(frozen=True)
class SplitModel:
    """A causal LM split where the chunked loss needs it: the decoder, and the output layer."""

    decoder: torch.nn.Module
    head: torch.nn.Module
    tokens_per_chunk: int


def uses_chunked_loss(vocab_size: int) -> bool:
    return vocab_size >= CHUNKED_LOSS_MIN_VOCAB


def chunk_tokens(vocab_size: int) -> int:
    return max(MIN_CHUNK_TOKENS, CHUNK_LOGITS_BYTES // (4 * max(vocab_size, 1)))


def split_for_chunked_loss(model: torch.nn.Module) -> SplitModel | None:
    """The decoder and output layer of ``model`` (PEFT-wrapped or not), or None when the chunked
    loss does not apply: a small vocabulary, or logits the model post-processes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not uses_chunked_loss(int(getattr(config, "vocab_size", None) or 0)):
        return None
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_POST_PROCESSING):
        return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is base:
        return None
    return SplitModel(decoder=decoder, head=head, tokens_per_chunk=chunk_tokens(int(config.vocab_size)))


def chunked_causal_lm_loss(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None,
    tokens_per_chunk: int,
) -> torch.Tensor:
    """The loss transformers' ForCausalLMLoss gives for ``head(hidden)`` and ``labels`` (position i
    predicts label i+1; the sum over trained tokens divided by ``num_items_in_batch`` when given,
    else their mean), computed ``tokens_per_chunk`` tokens at a time (see ``chunk_tokens``)."""
    import torch

    from plugins.training.linear_cross_entropy import LinearCrossEntropy, plain_linear

    states, targets, _ = _trained_tokens(hidden, labels)
    linear = plain_linear(head)
    if linear is not None:
        total = LinearCrossEntropy.apply(states, linear.weight, linear.bias, targets, tokens_per_chunk)
    else:
        total = _recomputed_chunks(head, states, targets, tokens_per_chunk)
    if num_items_in_batch is None:
        return total / max(targets.numel(), 1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def chunked_row_losses(
    hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, tokens_per_chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``labels``: the summed cross-entropy of its trained tokens (fp32) and their
    count, as ``validation_loss.row_losses`` gives from full logits. For evaluation, and for the
    sequence log-probabilities of preference training: there, with gradients, each chunk's logits
    stay alive for the backward pass, but only at the trained (answer) positions."""
    import torch
    from torch.nn import functional

    states, targets, trained = _trained_tokens(hidden, labels)
    rows = trained // labels.shape[-1]
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, targets.numel(), tokens_per_chunk):
        chunk = slice(start, start + tokens_per_chunk)
        losses = functional.cross_entropy(head(states[chunk]).float(), targets[chunk], reduction="none")
        sums.index_add_(0, rows[chunk], losses)
    return sums, torch.bincount(rows, minlength=labels.shape[0])


def _trained_tokens(hidden: torch.Tensor, labels: torch.Tensor):
    """The hidden states that predict a trained label (position i predicts label i+1), those
    labels, and the flat [batch * length] index of each."""
    from torch.nn import functional

    targets = functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    trained = (targets != IGNORE_INDEX).nonzero().squeeze(-1)
    states = hidden.reshape(-1, hidden.shape[-1]).index_select(0, trained)
    return states, targets.index_select(0, trained), trained


def _recomputed_chunks(head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor, tokens_per_chunk: int):
    """Any output layer (LoRA-wrapped, quantized): each chunk is recomputed in the backward pass."""
    import torch
    from torch.utils.checkpoint import checkpoint

    # Starting from zero times the states keeps the loss in the graph when no token is trained.
    total = states.sum(dtype=torch.float32) * 0.0
    for start in range(0, targets.numel(), tokens_per_chunk):
        end = start + tokens_per_chunk
        total = total + checkpoint(_summed_loss, head, states[start:end], targets[start:end], use_reentrant=False)
    return total


def _summed_loss(head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from torch.nn import functional

    return functional.cross_entropy(head(states).float(), targets, reduction="sum")
