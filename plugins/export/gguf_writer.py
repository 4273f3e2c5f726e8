"""Write a Hugging Face Llama-family checkpoint as GGUF with the ``gguf`` package alone.

Produces the tensors llama.cpp's own converter would (names, the Q/K row permutation, F32 norms)
and the tokenizer metadata (byte-level BPE), so the file runs in llama.cpp and Ollama. Python can
quantize to f32/f16/bf16/q8_0/q4_0; K-quants go through ``plugins.export.quantize``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from entity_training import ConfigError, Problem
from plugins.export.architectures import gguf_architecture
from plugins.export.gguf_vocab import GGUFVocab, build_gguf_vocab

PYTHON_QUANTIZATIONS = ("f32", "f16", "bf16", "q8_0", "q4_0")


@dataclass(frozen=True)
class GGUFSummary:
    path: str
    quantization: str
    tensor_count: int
    tensor_types: dict[str, int]  # ggml type name -> number of tensors
    file_size_bytes: int


def write_gguf(
    model_dir: Path,
    out_path: Path,
    *,
    quantization: str = "f16",
    tokenizer: Any = None,
    chat_template: str | None = None,
    pre_tokenizer: str | None = None,
    model_name: str | None = None,
) -> GGUFSummary:
    """Convert the safetensors checkpoint in ``model_dir`` (full weights, not an adapter) to GGUF.

    ``tokenizer`` defaults to the one saved in ``model_dir``; ``chat_template`` to its template.
    """
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    if quantization not in PYTHON_QUANTIZATIONS:
        raise ConfigError(
            Problem(
                f"the gguf package cannot write {quantization!r}; it writes {', '.join(PYTHON_QUANTIZATIONS)} "
                "(K-quants are made from an f16 file by llama.cpp's quantizer).",
                path="gguf_quantization",
            )
        )
    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    arch = gguf_architecture(config, source=str(model_dir / "config.json"))
    tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_dir)
    vocab = build_gguf_vocab(tokenizer, config.vocab_size, pre_tokenizer=pre_tokenizer)

    writer = gguf.GGUFWriter(str(out_path), arch.gguf_arch, use_temp_file=True)
    _add_model_metadata(writer, config, quantization, model_name or model_dir.name)
    _add_vocab(writer, vocab, chat_template or getattr(tokenizer, "chat_template", None))
    name_map = gguf.get_tensor_name_map(_model_arch(arch.gguf_arch), config.num_hidden_layers)
    head_dim = _head_dim(config)
    counts: dict[str, int] = {}
    for hf_name, tensor in _checkpoint_tensors(model_dir):
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConfigError(
                Problem(f"GGUF export cannot map the tensor {hf_name!r} of this checkpoint.", file=str(model_dir))
            )
        if arch.permute_qk and ".q_proj." in hf_name:
            tensor = _permute_rotary_rows(tensor, config.num_attention_heads, head_dim)
        elif arch.permute_qk and ".k_proj." in hf_name:
            tensor = _permute_rotary_rows(tensor, config.num_key_value_heads, head_dim)
        data, qtype = _encode(tensor, gguf_name, quantization)
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFSummary(str(out_path), quantization, sum(counts.values()), counts, Path(out_path).stat().st_size)


def _model_arch(name: str):
    import gguf

    return next(arch for arch, arch_name in gguf.MODEL_ARCH_NAMES.items() if arch_name == name)


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    return float(theta if theta is not None else getattr(config, "rope_theta", 10000.0))


def _add_model_metadata(writer: Any, config: Any, quantization: str, name: str) -> None:
    import gguf

    head_dim = _head_dim(config)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    }
    writer.add_file_type(file_types[quantization])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocab(writer: Any, vocab: GGUFVocab, chat_template: str | None) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    setters = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "pad": writer.add_pad_token_id,
        "unk": writer.add_unk_token_id,
    }
    for role, token_id in vocab.special_ids.items():
        setters[role](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if chat_template:
        writer.add_chat_template(chat_template)


def _permute_rotary_rows(weight: np.ndarray, n_heads: int, head_dim: int) -> np.ndarray:
    """Reorder each head's rows from HF's (i, i+d/2) rotary pairing to llama.cpp's (2i, 2i+1)."""
    rest = weight.shape[1:]
    return weight.reshape(n_heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def _encode(tensor: np.ndarray, gguf_name: str, quantization: str):
    """Pick the ggml type for one tensor and convert it; 1-D tensors (norms, biases) stay F32."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    if tensor.ndim == 1 or quantization == "f32":
        return tensor.astype(np.float32), Q.F32
    target = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[quantization]
    if target == Q.Q4_0 and gguf_name == "output.weight":
        target = Q.Q8_0  # the output projection is the most sensitive tensor; llama.cpp keeps it higher too
    block_size, _ = gguf.GGML_QUANT_SIZES[target]
    if tensor.shape[-1] % block_size != 0:
        target = Q.F16  # rows must be whole blocks
    if target == Q.F16:
        return tensor.astype(np.float16), Q.F16
    return gguf.quants.quantize(tensor.astype(np.float32), target), target


def _checkpoint_tensors(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, float32 array) one tensor at a time, widening bf16/f16 via torch."""
    import torch
    from safetensors import safe_open

    files = _safetensors_files(model_dir)
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name).to(torch.float32).numpy()


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files or (model_dir / "adapter_config.json").is_file():
        raise ConfigError(
            Problem(
                "GGUF export needs full model weights in safetensors format; this folder has "
                + ("a LoRA adapter (merge it first: merge_adapter: true)" if files else "no *.safetensors file")
                + ".",
                file=str(model_dir),
            )
        )
    return files
