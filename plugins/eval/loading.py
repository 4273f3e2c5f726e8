"""Loading what training saved: the tokenizer beside an adapter, and the trained model itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plugins.models.adapters import is_adapter_folder

__all__ = ["adapter_base_model", "exact_base_model", "is_adapter_folder", "load_saved_tokenizer", "load_trained_model"]


def adapter_base_model(adapter_dir: str | Path) -> str:
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    return str(config.get("base_model_name_or_path") or "")


def exact_base_model(adapter_dir: str | Path, declared: str | None = None) -> str:
    """The base an adapter was trained on: the folder PEFT recorded when it still exists (pinned to
    the exact build, e.g. a versioned built-in), else the declared name (a hub id or registry name)."""
    recorded = adapter_base_model(adapter_dir)
    if recorded and Path(recorded).is_dir():
        return recorded
    return declared or recorded


def load_saved_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved with a model or adapter (final-model/ has no config.json for an adapter)."""
    from plugins.models import load_tokenizer

    if is_adapter_folder(folder):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder))
    return load_tokenizer(str(folder))


def load_trained_model(
    folder: str | Path,
    *,
    base_model: str | None = None,
    dtype: Any = None,
    device: str = "cpu",
    permissions: dict[str, bool] | None = None,
) -> Any:
    """The trained model: full weights, or the adapter applied to its (unquantized) base model.

    ``permissions`` are the loading options the user gave for their model (``user_model_options``
    of the training config): the base model, or full weights that keep the base's own code.
    """
    import torch

    from plugins.models import load_causal_lm

    dtype = dtype or torch.float32
    permissions = permissions or {}
    if not is_adapter_folder(folder):
        return load_causal_lm(str(folder), dtype=dtype, device_map=device, **permissions).eval()
    from peft import PeftModel

    base = load_causal_lm(exact_base_model(folder, base_model), dtype=dtype, device_map=device, **permissions)
    return PeftModel.from_pretrained(base, str(folder)).eval()
