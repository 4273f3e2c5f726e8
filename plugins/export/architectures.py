"""Which Hugging Face architectures the GGUF writer supports, and how each maps to llama.cpp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entity_training import ConfigError, Problem


@dataclass(frozen=True)
class GGUFArchitecture:
    gguf_arch: str  # llama.cpp architecture name, a key of gguf.MODEL_ARCH_NAMES values
    permute_qk: bool  # HF rotary pairs (i, i+d/2); llama.cpp's LLAMA arch pairs (2i, 2i+1)


SUPPORTED_ARCHITECTURES: dict[str, GGUFArchitecture] = {
    "LlamaForCausalLM": GGUFArchitecture("llama", permute_qk=True),
    "MistralForCausalLM": GGUFArchitecture("llama", permute_qk=True),
    # Qwen2 uses NeoX-style rotary in llama.cpp too, so its weights go in unpermuted.
    "Qwen2ForCausalLM": GGUFArchitecture("qwen2", permute_qk=False),
}


def gguf_architecture(config: Any, *, source: str = "") -> GGUFArchitecture:
    """The llama.cpp mapping for a transformers config, or a ConfigError before any work is done."""
    names = list(getattr(config, "architectures", None) or [])
    supported = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
    for name in names:
        if name in SUPPORTED_ARCHITECTURES:
            _check_rope_scaling(config, name, source)
            return SUPPORTED_ARCHITECTURES[name]
    found = ", ".join(names) or f"model_type={getattr(config, 'model_type', '?')}"
    raise ConfigError(
        Problem(
            f"GGUF export does not support the architecture {found}. Supported architectures: "
            f"{supported}. Export this model with export_formats [huggingface, merged] instead and "
            "convert it with llama.cpp's own convert_hf_to_gguf.py.",
            file=source or None,
            path="export_formats",
        )
    )


def _check_rope_scaling(config: Any, name: str, source: str) -> None:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in (None, "default"):
        raise ConfigError(
            Problem(
                f"GGUF export of {name} with rope scaling {rope_type!r} is not supported yet (only "
                "plain rotary embeddings). Export with export_formats [huggingface, merged] and convert "
                "with llama.cpp's convert_hf_to_gguf.py.",
                file=source or None,
                path="export_formats",
            )
        )
