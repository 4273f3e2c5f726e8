"""Model shapes for the memory-plan tests: built on the meta device from a config, no weights."""

from __future__ import annotations


def llama_shape(hidden: int = 128, heads: int = 4):
    """A 4-layer Llama's shape, vocabulary 4096, MLP 4x the hidden size, half as many KV heads."""
    from transformers import LlamaConfig

    from plugins.training.model_shape import model_shape

    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=4,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
    )
    return model_shape(config)


def training_shape(**changes):
    """Full fp32 training, micro-batch 8 x accumulation 2 at 512 tokens, no checkpointing; ``changes`` on top."""
    from plugins.training.memory_plan import TrainingShape

    settings = {
        "method": "full",
        "precision": "fp32",
        "batch_size": 8,
        "gradient_accumulation_steps": 2,
        "max_seq_length": 512,
        "gradient_checkpointing": False,
    }
    return TrainingShape(**{**settings, **changes})
