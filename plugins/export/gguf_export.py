"""One GGUF file, start to finish: write (or write f16 and quantize with llama.cpp), read back,
run it in llama.cpp against the source model, and only then rename it into place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from entity_training import PluginError
from plugins.export.gguf_writer import PYTHON_QUANTIZATIONS, write_gguf
from plugins.export.quantize import check_quantizer_available, llama_cpp_python_available, quantize_gguf
from plugins.export.verify import Reference, build_reference, compare_gguf, gate, read_gguf_summary


def export_gguf_file(
    model_dir: Path,
    output_file: Path,
    quantization: str,
    *,
    llama_cpp_dir: str | None = None,
    chat_template: str | None = None,
    pre_tokenizer: str | None = None,
    verify: bool = True,
    prompts: list[str] | None = None,
    tokenizer: Any = None,
    model_name: str | None = None,
    reference: Reference | None = None,
) -> dict[str, Any]:
    """Write ``output_file`` from the full-weight HF folder ``model_dir``; return its report entry."""
    from plugins.models import load_tokenizer

    check_quantizer_available([quantization], llama_cpp_dir)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(str(model_dir))
    chat_template = chat_template or tokenizer.chat_template
    output_file.parent.mkdir(parents=True, exist_ok=True)
    partial = output_file.with_name(f".{output_file.name}.partial")
    intermediate = output_file.with_name(f".{output_file.name}.f16.partial")
    options = {
        "tokenizer": tokenizer,
        "chat_template": chat_template,
        "pre_tokenizer": pre_tokenizer,
        "model_name": model_name,
    }
    try:
        if quantization in PYTHON_QUANTIZATIONS:
            write_gguf(model_dir, partial, quantization=quantization, **options)
        else:
            write_gguf(model_dir, intermediate, quantization="f16", **options)
            quantize_gguf(intermediate, partial, quantization, llama_cpp_dir=llama_cpp_dir)
        entry = {"quantization": quantization, "file_size_bytes": partial.stat().st_size}
        entry["gguf_reader"] = _check_read_back(partial, tokenizer, chat_template)
        if verify:
            entry["llama_cpp"] = _run_in_llama_cpp(partial, model_dir, tokenizer, prompts, quantization, reference)
        os.replace(partial, output_file)
    finally:
        partial.unlink(missing_ok=True)
        intermediate.unlink(missing_ok=True)
    return entry


def _check_read_back(path: Path, tokenizer: Any, chat_template: str | None) -> dict[str, Any]:
    summary = read_gguf_summary(path)
    problems = []
    if summary["eos_token_id"] != tokenizer.eos_token_id:
        problems.append(f"EOS id {summary['eos_token_id']} != tokenizer's {tokenizer.eos_token_id}")
    if chat_template and summary["chat_template"] != chat_template:
        problems.append("the chat template differs from the training template")
    if summary["vocab_size"] < len(tokenizer):
        problems.append(f"{summary['vocab_size']} tokens < tokenizer's {len(tokenizer)}")
    if problems:
        raise PluginError(f"the GGUF file read back wrong ({'; '.join(problems)}); it was not published")
    return {k: v for k, v in summary.items() if k not in ("tensor_shapes", "chat_template")} | {
        "chat_template_matches": True
    }


def _run_in_llama_cpp(
    path: Path,
    model_dir: Path,
    tokenizer: Any,
    prompts: list[str] | None,
    quantization: str,
    reference: Reference | None,
) -> dict[str, Any] | str:
    if not llama_cpp_python_available():
        return "skipped: llama-cpp-python is not installed (pip install 'entity-training[gguf]')"
    import torch

    from plugins.eval.prompts import chat_prompts
    from plugins.models import load_causal_lm

    prompts = prompts or [p.text for p in chat_prompts(None, tokenizer, None, 4)]
    if reference is None:
        model = load_causal_lm(str(model_dir), dtype=torch.float32, device_map="cpu")
        reference = build_reference(model, tokenizer, prompts)
        del model
    comparison = gate(compare_gguf(path, tokenizer, prompts, reference), quantization)
    if not comparison.passed:
        raise PluginError(
            f"the {quantization} GGUF does not behave like the trained model in llama.cpp: top-1 agreement "
            f"{comparison.decisive_top1_agreement:.1%} away from near-ties (required {comparison.required_top1:.0%}), tokenization "
            f"{'matches' if comparison.tokenization_match else 'DIFFERS'}; it was not published."
        )
    return comparison.to_dict()
