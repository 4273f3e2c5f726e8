"""GGUF writer: round trip through GGUFReader, llama.cpp agreement with transformers, refusals."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers.export_fixtures import sample_prompts, trained_model_dir  # noqa: F401  (fixture)

from entity_training import ConfigError
from plugins.export.architectures import gguf_architecture
from plugins.export.gguf_vocab import detect_pre_tokenizer
from plugins.export.gguf_writer import write_gguf
from plugins.export.verify import build_reference, compare_gguf, gate, read_gguf_summary

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (optional extra [gguf])",
)


@pytest.fixture(scope="module")
def hf_model(trained_model_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(trained_model_dir), AutoTokenizer.from_pretrained(trained_model_dir)


@pytest.fixture(scope="module")
def reference(hf_model):
    model, tokenizer = hf_model
    prompts = sample_prompts(tokenizer, 4)
    return prompts, build_reference(model, tokenizer, prompts, max_new_tokens=8)


@pytest.mark.parametrize("quantization", ["f32", "f16", "bf16", "q8_0", "q4_0"])
def test_gguf_round_trip_metadata_and_shapes(trained_model_dir, hf_model, tmp_path, quantization):  # noqa: F811
    model, tokenizer = hf_model
    path = tmp_path / f"model-{quantization}.gguf"
    summary = write_gguf(trained_model_dir, path, quantization=quantization)

    read = read_gguf_summary(path)
    state = model.state_dict()
    assert read["architecture"] == "llama"
    assert read["tensor_count"] == summary.tensor_count == len(state)
    assert read["block_count"] == model.config.num_hidden_layers
    assert read["context_length"] == model.config.max_position_embeddings
    assert read["vocab_size"] == model.config.vocab_size  # padded past the tokenizer's tokens
    assert read["eos_token_id"] == tokenizer.eos_token_id
    assert read["add_bos_token"] is False
    assert read["chat_template"] == tokenizer.chat_template
    # GGUF lists dimensions innermost first
    assert read["tensor_shapes"]["token_embd.weight"] == [model.config.hidden_size, model.config.vocab_size]
    assert read["tensor_shapes"]["blk.0.attn_k.weight"] == list(
        state["model.layers.0.self_attn.k_proj.weight"].shape[::-1]
    )
    assert "F32" in read["tensor_types"]  # norms stay in full precision


def test_gguf_loads_back_in_transformers(trained_model_dir, hf_model, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    model, tokenizer = hf_model
    write_gguf(trained_model_dir, tmp_path / "model.gguf", quantization="f32")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf")
    ids = torch.tensor([tokenizer(sample_prompts(tokenizer, 1)[0])["input_ids"]])
    with torch.no_grad():
        diff = (reloaded(ids).logits - model(ids).logits).abs().max().item()
    assert diff < 1e-4


@needs_llama_cpp
@pytest.mark.parametrize("quantization", ["f32", "f16", "q8_0"])
def test_llama_cpp_agrees_with_transformers(trained_model_dir, reference, tmp_path, quantization):  # noqa: F811
    prompts, ref = reference
    path = tmp_path / f"model-{quantization}.gguf"
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(trained_model_dir)
    write_gguf(trained_model_dir, path, quantization=quantization)

    result = gate(compare_gguf(path, tokenizer, prompts, ref), quantization)

    assert result.tokenization_match
    assert result.passed, result.to_dict()
    if quantization in ("f32", "f16"):
        assert result.top1_agreement == 1.0
        assert result.greedy_match == 1.0
    else:
        assert result.top1_agreement >= 0.95
    if quantization == "f32":
        assert result.max_abs_logit_diff < 1e-3


@needs_llama_cpp
def test_k_quant_through_llama_cpp(trained_model_dir, reference, tmp_path):  # noqa: F811
    from plugins.export.quantize import quantize_gguf

    prompts, ref = reference
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(trained_model_dir)
    f16 = tmp_path / "model-f16.gguf"
    write_gguf(trained_model_dir, f16, quantization="f16")
    target = tmp_path / "model-q4_k_m.gguf"
    quantize_gguf(f16, target, "q4_k_m")

    assert target.stat().st_size < f16.stat().st_size
    from gguf import GGUFReader

    assert GGUFReader(str(target)).get_field("general.file_type").contents() == 15  # MOSTLY_Q4_K_M
    result = compare_gguf(target, tokenizer, prompts, ref)
    assert result.tokenization_match
    assert result.top1_agreement > 0.5  # measured, not gated: K-quants of a 64-wide model are coarse


def test_q_k_permutation_matches_llama_cpp_rotary_layout(trained_model_dir, tmp_path):  # noqa: F811
    """Un-permuting the GGUF rows must give back HF's q_proj exactly (and it must differ before)."""
    from gguf import GGUFReader
    from safetensors.torch import load_file

    write_gguf(trained_model_dir, tmp_path / "m.gguf", quantization="f32")
    tensors = {t.name: np.array(t.data) for t in GGUFReader(str(tmp_path / "m.gguf")).tensors}
    hf = load_file(str(trained_model_dir / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"].numpy()
    gguf_q = tensors["blk.0.attn_q.weight"].reshape(hf.shape)
    heads, head_dim = 4, hf.shape[0] // 4
    undone = gguf_q.reshape(heads, head_dim // 2, 2, -1).swapaxes(1, 2).reshape(hf.shape)
    assert not np.array_equal(gguf_q, hf)
    np.testing.assert_array_equal(undone, hf)


def test_unsupported_architecture_is_refused_with_the_supported_list():
    config = SimpleNamespace(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    with pytest.raises(ConfigError) as caught:
        gguf_architecture(config)
    message = str(caught.value)
    assert "GPT2LMHeadModel" in message and "LlamaForCausalLM" in message and "Qwen2ForCausalLM" in message
    assert caught.value.exit_code == 2


def test_rope_scaling_is_refused():
    config = SimpleNamespace(architectures=["LlamaForCausalLM"], rope_parameters={"rope_type": "llama3"})
    with pytest.raises(ConfigError, match="rope scaling 'llama3'"):
        gguf_architecture(config)


def test_pre_tokenizer_detection():
    assert detect_pre_tokenizer({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    qwen2 = llama3.replace(r"\p{N}{1,3}", r"\p{N}")
    for regex, name in ((llama3, "llama-bpe"), (qwen2, "qwen2")):
        spec = {
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": regex}},
                    {"type": "ByteLevel", "use_regex": False},
                ],
            }
        }
        assert detect_pre_tokenizer(spec) == name
    with pytest.raises(ConfigError, match="gguf_pre_tokenizer"):
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Whitespace"}})


def test_adapter_folder_is_refused(tmp_path: Path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    from plugins.export.gguf_writer import _safetensors_files

    with pytest.raises(ConfigError, match="LoRA adapter"):
        _safetensors_files(tmp_path)


@needs_llama_cpp
@pytest.mark.parametrize("architecture", ["mistral", "qwen2"])
def test_other_supported_architectures_agree_in_llama_cpp(request, tmp_path, architecture):
    """Mistral (LLAMA layout, permuted) and Qwen2 (own arch, q/k/v biases, not permuted)."""
    from helpers.export_fixtures import cached_trained_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = cached_trained_model(request, architecture)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    prompts = sample_prompts(tokenizer, 4)
    reference = build_reference(model, tokenizer, prompts)
    write_gguf(folder, tmp_path / "m.gguf", quantization="f16")

    result = gate(compare_gguf(tmp_path / "m.gguf", tokenizer, prompts, reference), "f16")

    assert (
        read_gguf_summary(tmp_path / "m.gguf")["architecture"] == {"mistral": "llama", "qwen2": "qwen2"}[architecture]
    )
    assert result.tokenization_match and result.top1_agreement == 1.0, result.to_dict()
