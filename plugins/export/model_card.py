"""The model card (README.md) written into every export folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plugins.models.provenance import BaseModelProvenance, base_model_provenance

TRAINING_KEYS = (
    "training_method",
    "learning_rate",
    "num_epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation_steps",
    "precision",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "load_in_4bit",
    "seed",
)


@dataclass
class CardInfo:
    name: str
    base_model: str
    method: str  # lora | qlora | full
    artefact: str  # what this folder holds: huggingface | merged | safetensors | gguf
    files: list[str] = field(default_factory=list)
    training_config: dict[str, Any] = field(default_factory=dict)
    training_result: dict[str, Any] = field(default_factory=dict)
    dataset_stats: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    max_seq_length: int | None = None
    hub_model_id: str | None = None
    base_license: str | None = None  # None: looked up from the base model (registry, its files)


def render_model_card(info: CardInfo) -> str:
    is_adapter = info.artefact == "huggingface" and info.method in ("lora", "qlora")
    base = base_model_provenance(info.base_model)
    base = BaseModelProvenance(base.name, info.base_license or base.license)
    sections = [
        _front_matter(info, base, is_adapter),
        f"# {info.name}\n\nA fine-tune of `{base.name}` ({info.method.upper()}), trained with "
        f"entity-training. This folder holds the **{_artefact_title(info.artefact, is_adapter)}**.",
        _licence_section(base),
        _data_section(info),
        _training_section(info),
        _evaluation_section(info.evaluation),
        "## Usage\n\n" + _usage(info, is_adapter),
        "## Limitations\n\n"
        "- Fine-tuned on the data summarised above only; expect it to inherit the base model's gaps and biases.\n"
        "- Evaluated only with the metrics above on a held-out split of the same data, not on general benchmarks.\n"
        "- Prompts must use the chat template it was trained with (shipped with the tokenizer, in the GGUF "
        "metadata and in the Modelfile); other formats degrade the answers.",
    ]
    if info.files:
        sections.append("## Files\n\n" + "\n".join(f"- `{name}`" for name in info.files))
    return "\n\n".join(s for s in sections if s) + "\n"


def _front_matter(info: CardInfo, base: BaseModelProvenance, is_adapter: bool) -> str:
    tags = ["entity-training", info.method, "text-generation"] + (["gguf"] if info.artefact == "gguf" else [])
    lines = ["---", f"base_model: {base.name}", f"license: {base.license or 'unknown'}"]
    lines += [f"library_name: {'peft' if is_adapter else 'transformers'}", "pipeline_tag: text-generation", "tags:"]
    lines += [f"  - {t}" for t in tags] + ["---"]
    return "\n".join(lines)


def _licence_section(base: BaseModelProvenance) -> str:
    if base.license:
        return (
            f"## Licence\n\nThe base model `{base.name}` is licensed under `{base.license}`; its terms apply to "
            "this fine-tune too."
        )
    return (
        f"## Licence\n\nThe licence of the base model `{base.name}` is unknown to entity-training (neither the "
        "model registry nor the model's files state it). Check the base model's licence before using or sharing "
        "this fine-tune: its terms apply here too."
    )


def _artefact_title(artefact: str, is_adapter: bool) -> str:
    if artefact == "huggingface":
        return "LoRA adapter (load it on top of the base model)" if is_adapter else "full model weights"
    return {
        "merged": "adapter merged into a 16-bit copy of the base model",
        "safetensors": "merged weights as a single safetensors file",
        "gguf": "GGUF files for llama.cpp and Ollama",
    }.get(artefact, artefact)


def _data_section(info: CardInfo) -> str:
    stats = info.dataset_stats
    if not stats:
        return ""
    lines = ["## Training data", ""]
    for key in ("rows", "train_rows", "validation_rows", "format", "turns", "characters"):
        if key in stats and not isinstance(stats[key], (dict, list)):
            lines.append(f"- {key.replace('_', ' ')}: {stats[key]}")
    if info.max_seq_length:
        lines.append(f"- max sequence length: {info.max_seq_length}")
    return "\n".join(lines) if len(lines) > 2 else ""


def _training_section(info: CardInfo) -> str:
    config = {k: info.training_config[k] for k in TRAINING_KEYS if k in info.training_config}
    result = info.training_result
    rows = [f"| {k} | {v} |" for k, v in config.items()]
    for key in ("steps", "train_loss", "final_eval_loss", "trained_tokens", "tokens_per_second"):
        if result.get(key) is not None:
            value = result[key]
            rows.append(f"| {key} | {round(value, 4) if isinstance(value, float) else value} |")
    if not rows:
        return ""
    return "## Training\n\n| setting | value |\n|---|---|\n" + "\n".join(rows)


def _evaluation_section(report: dict[str, Any]) -> str:
    if not report:
        return ""
    metrics = report.get("metrics", {})
    tuned, base = metrics.get("fine_tuned", {}), metrics.get("base") or {}
    rows = [
        f"| {name} | {_fmt(value)} | {_fmt(base.get(name))} |" for name, value in tuned.items() if value is not None
    ]
    table = "| metric | fine-tuned | base |\n|---|---|---|\n" + "\n".join(rows) if rows else ""
    return f"## Evaluation: {report.get('status', '?')}\n\n{table}".rstrip()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _usage(info: CardInfo, is_adapter: bool) -> str:
    repo = info.hub_model_id or "path/to/this/folder"
    blocks = []
    if info.artefact == "gguf":
        gguf = next((f for f in info.files if f.endswith(".gguf")), "model.gguf")
        blocks.append(f"llama.cpp:\n\n```bash\nllama-cli -m {gguf} -cnv\n```")
        if "Modelfile" in info.files:
            blocks.append(
                f"Ollama:\n\n```bash\nollama create {_ollama_name(info.name)} -f Modelfile\nollama run {_ollama_name(info.name)}\n```"
            )
        return "\n\n".join(blocks)
    if is_adapter:
        blocks.append(
            "PEFT:\n\n```python\nfrom peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n```'
        )
    else:
        blocks.append(
            "transformers:\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
            'messages = [{"role": "user", "content": "Hello!"}]\n'
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)\n'
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0]))\n```"
        )
    return "\n\n".join(blocks)


def _ollama_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower())
