"""Model FLOPs of one epoch of the benchmarked job, for the MFU against the matmul peak.

Full fine-tuning: 6*N per processed token (forward 2N, activation gradients 2N, weight gradients
2N), N = every matmul weight of the decoder. The LM head (hidden x vocabulary) counts for every
processed token when the model's own loss computes the logits of the whole batch, and for the
trained tokens only when the chunked loss applies (vocabulary >= 32k: the head runs on the
positions that predict a trained label, plugins/training/chunked_loss.py); the head's weight
gradient counts only when it is trained (full fine-tuning).
LoRA: 4*N (the frozen weights need no weight gradient) plus 6*N_lora for the adapters.
Attention adds 4*d*pairs per layer for the forward (QK^T and AV over the causal pairs of each
sample, the useful work), three times that with the backward.
"""

from __future__ import annotations


def training_flops(job, tokenizer, rows: list[dict], *, method: str) -> dict[str, float]:
    from plugins.models import load_model_config
    from plugins.training.chunked_loss import uses_chunked_loss
    from plugins.training.model_shape import lora_target_layers, model_shape

    shape = model_shape(load_model_config(job.model))
    lengths, trained_lengths = [], []
    for row in rows:
        full = len(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=False))
        prompt = len(
            tokenizer.apply_chat_template(row["prompt"], tokenize=True, return_dict=False, add_generation_prompt=True)
        )
        lengths.append(min(job.max_length, full))
        trained_lengths.append(max(0, min(job.max_length, full) - prompt))
    tokens, trained = sum(lengths), sum(trained_lengths)
    decoder = sum(layer.in_features * layer.out_features for layer in shape.per_layer_linears())
    head = shape.hidden_size * shape.vocab_size
    chunked = uses_chunked_loss(shape.vocab_size)
    head_tokens = trained if chunked else tokens
    pairs = sum(n * (n + 1) / 2 for n in lengths)
    attention = 3 * 4 * shape.hidden_size * pairs * shape.num_layers
    if method == "full":
        dense = 6 * decoder * tokens + 6 * head * head_tokens
    else:
        lora = sum(16 * (layer.in_features + layer.out_features) for layer in lora_target_layers(shape, "all-linear"))
        dense = 4 * decoder * tokens + 4 * head * head_tokens + 6 * lora * tokens
    return {
        "total": dense + attention,
        "dense": dense,
        "attention": attention,
        "params": decoder + head,
        "decoder_params": decoder,
        "head_params": head,
        "chunked_head": chunked,
        "tokens": tokens,
        "trained_tokens": trained,
    }
