"""Which export formats a request really writes: the adjustments a workflow announces at load
and the export job applies (one definition for both)."""

from __future__ import annotations

FULL_WEIGHT_FORMATS = {"merged", "safetensors", "gguf"}  # written from full weights: an adapter is merged first
MERGED_OF_FULL = "merged skipped: a full fine-tune already is a whole model; the huggingface export holds it"
MERGED_AS_HUGGINGFACE = (
    "merged written as huggingface: a full fine-tune already is a whole model, with no adapter to merge"
)
GGUF_FOR_OLLAMA = "gguf added: ollama runs a GGUF file (written with gguf_quantization)"


def formats_for(requested: list[str] | set[str], *, full_model: bool = False) -> tuple[set[str], list[str]]:
    """The formats to write for what was asked, and a note for each adjustment made."""
    formats, notes = set(requested), []
    if "ollama" in formats and "gguf" not in formats:
        formats.add("gguf")
        notes.append(GGUF_FOR_OLLAMA)
    if full_model and "merged" in formats:
        formats.discard("merged")
        notes.append(MERGED_OF_FULL if "huggingface" in formats else MERGED_AS_HUGGINGFACE)
        formats.add("huggingface")
    return formats, notes


def merge_refused_message(formats: set[str]) -> str:
    return (
        f"export_formats {sorted(formats & FULL_WEIGHT_FORMATS)} need full weights, but the model is a LoRA "
        "adapter and merge_adapter is false. Set merge_adapter: true or export only 'huggingface'."
    )
