"""Load the model for a training method: full (trainable weights), LoRA/DoRA (PEFT adapters on a
frozen base), QLoRA (adapters on a bitsandbytes 4-bit base, after k-bit preparation); from the
configured model, or from a starting point (plugins/training/starting_model.py): a saved adapter
continued, or another model folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plugins.training.precision import torch_dtype

if TYPE_CHECKING:
    from plugins.training.starting_model import StartingModel
    from plugins.training_config import ResolvedTrainingConfig

_COMPUTE_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    total_params: int
    trainable_params: int


def _base_dtype(config: ResolvedTrainingConfig):
    # Full training keeps fp32 master weights (autocast does the low-precision maths); a frozen
    # LoRA base can sit at the compute dtype and halve its memory.
    if config.training_method == "full":
        return torch_dtype("fp32")
    return torch_dtype(config.precision)


def quantization_config(config: ResolvedTrainingConfig):
    """The bitsandbytes 4-bit config of a QLoRA run (None when the base is not quantized)."""
    if not config.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    compute = config.bnb_4bit_compute_dtype
    compute_precision = config.precision if compute == "auto" else _COMPUTE_DTYPES[compute]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=config.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=torch_dtype(compute_precision),
    )


def lora_config(config: ResolvedTrainingConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        use_dora=config.training_method == "dora",
        modules_to_save=config.modules_to_save or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def count_parameters(model) -> tuple[int, int]:
    """(total, trainable); 4-bit weights are packed two per byte, so count them as their logical size."""
    total = trainable = 0
    for parameter in model.parameters():
        count = parameter.numel()
        if parameter.__class__.__name__ == "Params4bit":
            count *= 2
        total += count
        if parameter.requires_grad:
            trainable += count
    return total, trainable


def load_model_for_training(
    config: ResolvedTrainingConfig,
    *,
    gradient_checkpointing: bool,
    device_map=None,
    start: StartingModel | None = None,
) -> LoadedModel:
    """The model, ready for the Trainer, with its tokenizer (which always has a pad token).

    ``start``: the weights to start from (default: training.config's model, and the adapter it
    names). A starting adapter is continued, trainable, as saved; full training merges it into its
    base first.
    """
    from plugins.models import load_causal_lm, load_tokenizer
    from plugins.models.loaders import user_model_options
    from plugins.training.starting_model import StartingModel

    start = start or StartingModel(config.model_name_or_path, config.adapter_path)
    permissions = user_model_options(config)
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=permissions["trust_remote_code"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_causal_lm(
        start.model,
        dtype=_base_dtype(config),
        quantization_config=quantization_config(config),
        device_map=device_map,
        **permissions,
    )
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    if config.load_in_4bit:
        _keep_4bit_weights_trainable(model)
    if config.training_method == "full":
        if start.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, start.adapter).merge_and_unload()
    else:
        model = _add_adapters(model, config, gradient_checkpointing=gradient_checkpointing, adapter=start.adapter)
    total, trainable = count_parameters(model)
    return LoadedModel(model=model, tokenizer=tokenizer, total_params=total, trainable_params=trainable)


def _keep_4bit_weights_trainable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for inference during training's evaluations.

    On a CPU with AVX512-BF16, a ``Linear4bit`` called in eval mode without gradients converts its
    weight in place to a CPU inference layout and keeps it. The initial validation pass then
    degrades all the training after it: a tiny Llama's QLoRA loss fell 5.56 -> 5.11 in 12 steps
    instead of below 5.0 without the repacking (tests/training/test_fine_tuning.py).
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _add_adapters(model, config: ResolvedTrainingConfig, *, gradient_checkpointing: bool, adapter: str | None):
    """A fresh adapter from training_config's LoRA settings, or the saved ``adapter`` continued."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if config.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        # Checkpointed blocks need an input that requires grad, or the frozen base cuts the graph.
        model.enable_input_require_grads()
    if adapter is None:
        return get_peft_model(model, lora_config(config))
    base_name = model.name_or_path
    model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    # Saved with the base it was trained on here (the adapter may name a folder that moved).
    model.peft_config["default"].base_model_name_or_path = base_name
    return model
