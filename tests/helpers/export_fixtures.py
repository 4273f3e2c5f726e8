"""A tiny trained Llama with a ChatML byte-level BPE tokenizer, for the evaluation/export tests.

Built locally in seconds (no hub): a tokenizer trained on a small synthetic corpus, a 2-layer
LlamaForCausalLM trained for a few dozen steps on chat-formatted text so that its next-token
predictions have clear margins (random weights give near-ties that no export could reproduce).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.dataset_splits import store_splits
from helpers.training import resolved_training_config
from plugins.models.chat_template import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"What is {a} plus {b}?"},
        {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
    ]
    for a in range(1, 9)
    for b in range(1, 6)
] + [
    [
        {"role": "user", "content": f"Name the colour of item {i}."},
        {"role": "assistant", "content": f"Item {i} is {colour}."},
    ]
    for i, colour in enumerate(["red", "green", "blue", "yellow", "purple", "orange"] * 2)
]


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [m["content"] for conv in CONVERSATIONS for m in conv] + ["system user assistant tool"]
    tokenizer.train_from_iterator(corpus * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def build_trained_model(folder: Path, steps: int = 60, seed: int = 0, architecture: str = "llama"):
    """Save a tiny trained causal LM (llama, mistral or qwen2) + tokenizer; return (model, tokenizer)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    vocab_size = ((len(tokenizer) + 31) // 32) * 32  # padded like real models; GGUF must pad too
    config_class, model_class = {
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "mistral": ("MistralConfig", "MistralForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    }[architecture]
    config = getattr(transformers, config_class)(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = getattr(transformers, model_class)(config)
    texts = [tokenizer.apply_chat_template(conv, tokenize=False) for conv in CONVERSATIONS]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folder)
    return model, tokenizer


def sample_prompts(tokenizer, count: int = 4) -> list[str]:
    """Chat-formatted prompts (with the generation prompt) from the training conversations."""
    picks = CONVERSATIONS[:: max(1, len(CONVERSATIONS) // count)][:count]
    return [tokenizer.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True) for conv in picks]


FIXTURE_VERSION = 1  # bump when build_trained_model changes


def cached_trained_model(request, architecture: str = "llama") -> Path:
    """The tiny trained model of ``architecture``, built once and kept in pytest's cache folder.

    Deterministic (fixed seed), so a cached copy is as good as a fresh one.
    """
    import os
    import shutil
    import tempfile

    cache = request.config.cache.mkdir("entity-training-fixtures")
    folder = cache / f"tiny-trained-{architecture}-v{FIXTURE_VERSION}"
    if not (folder / "model.safetensors").is_file():
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=".building-"))
        build_trained_model(staging, architecture=architecture)
        try:
            os.replace(staging, folder)
        except OSError:  # another test process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def trained_model_dir(request) -> Path:
    """A folder with the tiny trained Llama, its tokenizer and chat template."""
    return cached_trained_model(request)


def make_lora_adapter(base_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A LoRA adapter on ``base_dir`` with non-zero weights, saved with the tokenizer like final-model/."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)  # a fresh adapter is a no-op; make it change the model
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return out_dir


def fill_memory_for_export(memory, final_dir: Path, base_model: str, method: str = "lora", max_seq_length: int = 128):
    """What INPUT..REVIEW leave in memory for the OUTPUT plugins (by the documented contracts)."""
    from plugins import memory_keys as keys

    store_splits(
        memory,
        final_dir.parent,
        train=[{"messages": c, "source": {"file": "x.jsonl", "line": i + 1}} for i, c in enumerate(CONVERSATIONS)],
        validation=[
            {"messages": c, "source": {"file": "x.jsonl", "line": i + 1}} for i, c in enumerate(CONVERSATIONS[::7])
        ],
    )
    memory.set(keys.DATASET_STATS, {"rows": len(CONVERSATIONS), "format": "openai"})
    memory.set(
        keys.DATASET_TOKENIZED,
        {"chat_template": CHATML_TEMPLATE, "max_seq_length": max_seq_length, "train_on": "assistant", "packing": True},
    )
    memory.set(
        keys.TRAINING_CONFIG,
        resolved_training_config(model_name_or_path=base_model, training_method=method, learning_rate=1e-3, lora_r=4),
    )
    memory.set(
        keys.TRAINING_RESULT,
        {
            "final_model_path": str(final_dir),
            "method": method,
            "base_model": base_model,
            "train_loss": 1.0,
            "best_eval_loss": 1.1,
            "initial_eval_loss": 2.0,
            "steps": 10,
            "trained_tokens": 1000,
            "tokens_per_second": 100.0,
            "peak_memory_bytes": 1,
            "log_history": [{"step": s, "loss": 3.0 / s} for s in range(1, 11)] + [{"step": 10, "eval_loss": 1.1}],
            "metrics_path": None,
        },
    )
