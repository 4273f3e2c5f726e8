"""Model FLOPs of one epoch of the benchmarked job, for the MFU against the matmul peak.

Full fine-tuning: 6*N per processed token (forward 2N, activation gradients 2N, weight gradients
2N), N = every matmul weight (decoder linears and the LM head, not the embedding lookup).
LoRA: 4*N (the frozen weights need no weight gradient) plus 6*N_lora for the adapters.
Attention adds 4*d*pairs per layer for the forward (QK^T and AV over the causal pairs of each
sample, the useful work), three times that with the backward.
"""

from __future__ import annotations


def training_flops(job, tokenizer, rows: list[dict], *, method: str) -> dict[str, float]:
    from plugins.models import load_model_config
    from plugins.training.model_shape import lora_target_layers, model_shape

    shape = model_shape(load_model_config(job.model))
    lengths = [
        min(
            job.max_length,
            len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False)),
        )
        for r in rows
    ]
    tokens = sum(lengths)
    decoder = sum(layer.in_features * layer.out_features for layer in shape.per_layer_linears())
    params = decoder + shape.hidden_size * shape.vocab_size  # + the LM head
    pairs = sum(n * (n + 1) / 2 for n in lengths)
    attention = 3 * 4 * shape.hidden_size * pairs * shape.num_layers
    if method == "full":
        dense = 6 * params * tokens
    else:
        lora = sum(16 * (layer.in_features + layer.out_features) for layer in lora_target_layers(shape, "all-linear"))
        dense = 4 * params * tokens + 6 * lora * tokens
    return {"total": dense + attention, "dense": dense, "attention": attention, "params": params, "tokens": tokens}
