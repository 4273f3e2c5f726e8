"""A GGUF file as a Hugging Face folder: converted once per file content, then loaded like any other.

transformers loads a GGUF only by dequantizing it on every load and marks the result as quantized,
which its Trainer refuses to train. The converted folder (fp32 safetensors, config, tokenizer,
chat template) is a plain checkpoint that training, PEFT, evaluation, merging and export all load,
and the next loads take seconds instead of a dequantization. ``source.json`` in the folder says
where it came from. Folders are keyed by the file's sha256 (memoised by ``digest.py``), so a
renamed copy reuses the folder and a changed file gets a new one.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from plugins.models.cache import build_once
from plugins.models.digest import memoised_sha256
from plugins.utils import cache_root

CONVERSION_VERSION = "v1"  # bump when the conversion's output changes
SOURCE_NOTE = "source.json"


def gguf_cache_dir() -> Path:
    return cache_root() / "models" / "gguf"


def converted_folder(gguf_path: Path) -> Path:
    """Where ``gguf_path`` is (or will be) converted; hashes the file unless its digest is memoised."""
    digest = memoised_sha256(Path(gguf_path), gguf_cache_dir() / "digests.json")
    return gguf_cache_dir() / f"{digest[:32]}-{CONVERSION_VERSION}"


def ensure_hf_folder(gguf_path: str | Path, *, license: str | None = None) -> Path:
    """The Hugging Face folder converted from ``gguf_path``, converting it on first use (atomically, once).

    ``license`` is what the registry says of the model, for when the file's metadata does not.
    """
    gguf_path = Path(gguf_path).resolve()
    final = converted_folder(gguf_path)
    folder, _ = build_once(final, lambda staging: convert_gguf(gguf_path, staging, license=license))
    return folder


def read_source_note(folder: str | Path) -> dict[str, Any] | None:
    """The ``source.json`` of a converted folder; None for any other folder."""
    try:
        note = json.loads((Path(folder) / SOURCE_NOTE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def gguf_fields(path: str | Path, *names: str) -> dict[str, Any]:
    """Metadata values of a GGUF file (only its header is read), None for absent ones."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {name: reader.get_field(name) for name in names}
    return {name: field.contents() if field is not None else None for name, field in fields.items()}


def convert_gguf(gguf_path: Path, folder: Path, *, license: str | None = None) -> None:
    """Dequantize ``gguf_path`` to fp32 and save it, with its tokenizer, as a Hugging Face folder."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    metadata = gguf_fields(gguf_path, "general.name", "general.license", "tokenizer.chat_template")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if metadata["tokenizer.chat_template"] and not tokenizer.chat_template:
        tokenizer.chat_template = metadata["tokenizer.chat_template"]
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    _forget_gguf_quantization(model)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    stat = gguf_path.stat()
    note = {
        "original_path": str(gguf_path),
        "sha256": memoised_sha256(gguf_path, gguf_cache_dir() / "digests.json"),
        "size_bytes": stat.st_size,
        "name": metadata["general.name"],
        "license": metadata["general.license"] or license,
        "transformers": transformers.__version__,
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "conversion_seconds": round(time.perf_counter() - started, 1),
        "conversion_version": CONVERSION_VERSION,
    }
    (folder / SOURCE_NOTE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")


def _forget_gguf_quantization(model: Any) -> None:
    # The weights are already dequantized; a GGUF marker saved with them would make every later
    # load refuse training exactly as the GGUF file itself does.
    for attribute in ("hf_quantizer", "quantization_method"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
