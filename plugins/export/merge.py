"""Merge a LoRA adapter into a 16-bit copy of its base model on CPU, and prove the merge is exact.

The base is always reloaded unquantized (a QLoRA adapter is never merged into 4-bit weights).
The merged model must reproduce the adapter model's logits: first in float32 (the merge itself),
then after saving in the target dtype and reloading (what users will load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entity_training import ConfigError, PluginError, Problem
from plugins.eval.loading import adapter_base_model, is_adapter_folder, load_saved_tokenizer, load_trained_model
from plugins.export.disk import BYTES_PER_DTYPE, require_free_space
from plugins.export.verify import Comparison, Reference, build_reference, compare_hf_model

# max |logit difference| allowed, relative to the largest reference logit
LOGIT_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
MIN_TOP1_AGREEMENT = {"float32": 1.0, "float16": 1.0, "bfloat16": 0.95}


def require_adapter(folder: Path) -> None:
    """A merge needs a LoRA adapter; a full fine-tune has nothing to merge (the export plugin skips it)."""
    if not is_adapter_folder(folder):
        raise ConfigError(
            Problem(
                f"there is nothing to merge: {folder} holds the full model weights of a full fine-tune, "
                "not a LoRA adapter. It already is a whole model: load it as it is, or convert it with "
                "scripts/convert_to_gguf.py.",
                file=str(folder),
            )
        )


def merged_size_bytes(base_model: str, dtype: str) -> int:
    from plugins.models import load_model_config
    from plugins.training.model_shape import model_shape

    return model_shape(load_model_config(base_model)).total_params * BYTES_PER_DTYPE[dtype]


def merge_precision(float32_bytes: int, target_dtype: str) -> str:
    """Merge in float32 (the exact check) when it fits comfortably in RAM, else in the target dtype."""
    import psutil

    return "float32" if float32_bytes * 2.5 < psutil.virtual_memory().available else target_dtype


def check_merge_space(adapter_dir: Path, output_dir: Path, dtype: str, base_model: str | None = None) -> int:
    """Pre-flight: the merged weights must fit on the output disk. Returns the size needed."""
    require_adapter(adapter_dir)
    needed = merged_size_bytes(base_model or adapter_base_model(adapter_dir), dtype)
    require_free_space(output_dir, needed, "the merged model")
    return needed


def merge_lora(
    adapter_dir: Path,
    output_dir: Path,
    prompts: list[str],
    *,
    base_model: str | None = None,
    dtype: str = "float16",
    permissions: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """Write the merged model + tokenizer into ``output_dir`` (an empty folder) and verify it.

    ``permissions``: the loading options the user gave for the base model (``user_model_options``).
    """
    import torch

    from plugins.models import load_causal_lm

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    base_name = base_model or adapter_base_model(adapter_dir)
    check_merge_space(adapter_dir, output_dir, dtype, base_name)
    tokenizer = load_saved_tokenizer(adapter_dir)
    work_dtype = merge_precision(merged_size_bytes(base_name, "float32"), dtype)
    adapted = load_trained_model(
        adapter_dir, base_model=base_name, dtype=getattr(torch, work_dtype), permissions=permissions
    )
    reference = build_reference(adapted, tokenizer, prompts)
    merged = adapted.merge_and_unload().eval()
    in_memory = check_logits(compare_hf_model(merged, reference), reference, work_dtype, f"merging in {work_dtype}")

    merged.to(getattr(torch, dtype)).save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    del merged, adapted
    reloaded = load_causal_lm(str(output_dir), dtype=getattr(torch, work_dtype), device_map="cpu")
    saved = check_logits(compare_hf_model(reloaded, reference), reference, dtype, f"the saved {dtype} model")
    return {
        "path": str(output_dir),
        "base_model": base_name,
        "dtype": dtype,
        "verification": {f"merge_{work_dtype}": in_memory.to_dict(), f"saved_{dtype}": saved.to_dict()},
    }


def check_logits(comparison: Comparison, reference: Reference, dtype: str, what: str) -> Comparison:
    """Pass/fail a reloaded 16/32-bit model against the reference; raise PluginError on failure.

    Top-1 agreement is counted away from near-ties (top-2 margin under twice the tolerance).
    """
    scale = max(float(abs(logits).max()) for logits in reference.logits)
    tolerance = LOGIT_TOLERANCE[dtype] * max(1.0, scale)
    decisive = [a for a, m in zip(comparison.agreements, comparison.margins, strict=True) if m > 2 * tolerance]
    comparison.decisive_top1_agreement = sum(decisive) / len(decisive) if decisive else 1.0
    comparison.required_top1 = MIN_TOP1_AGREEMENT[dtype]
    comparison.passed = (
        comparison.max_abs_logit_diff <= tolerance and comparison.decisive_top1_agreement >= MIN_TOP1_AGREEMENT[dtype]
    )
    if not comparison.passed:
        raise PluginError(
            f"{what} does not reproduce the adapter model: max |logit difference| "
            f"{comparison.max_abs_logit_diff:.4g} (tolerance {tolerance:.4g}), top-1 agreement "
            f"{comparison.decisive_top1_agreement:.1%} (required {MIN_TOP1_AGREEMENT[dtype]:.0%}). The export was not written."
        )
    return comparison
