"""TrainingConfigPlugin (PARSE): resolve and check the training configuration.

Features:
- every hyper-parameter of a run in one validated block (the CLI's named flags map to these
  field names: ``--lr`` -> ``learning_rate``, ``--lora-rank`` -> ``lora_r``, ...);
- cross-field checks with actionable messages: QLoRA turns on 4-bit loading (and says so), full
  fine-tuning of a 4-bit base is refused, ``target_modules`` that match nothing are named, the
  precision is resolved for the device (bf16 where it is native, fp32 on CPUs without it);
- at load (``check_workflow``): a precision the device cannot run and QLoRA without bitsandbytes
  are refused, settings the method overrides or never reads are announced;
- the model is resolved (registry name, local path or hub id) and its architecture checked
  from its config alone: no weights are read, nothing is built or converted (a built-in model is
  built, a GGUF file converted, where the model is first loaded).
- a PEFT adapter folder as the model (``adapter_config.json``): its base model is found offline
  (plugins/models/adapters.py) and becomes ``model_name_or_path``, the adapter ``adapter_path``,
  continued by the training; LoRA settings that differ from the adapter's are announced as ignored.

Stores the resolved configuration, a frozen ``ResolvedTrainingConfig``, in ``training.config``.

Raises:
    ConfigError: contradictory or impossible settings (exit code 2).
    InputError: an unknown model name or missing path, a folder that is neither a model nor an
        adapter, an adapter whose base model cannot be found offline, an architecture that cannot be loaded.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from entity_training import ConfigError, Plugin, PluginConfig, Problem, Stage
from entity_training.plugin import Finding
from plugins import memory_keys

Method = Literal["full", "lora", "qlora", "dora"]
# Settings that only an adapter method reads, and settings that only a 4-bit base reads.
ADAPTER_SETTINGS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save")
FOUR_BIT_SETTINGS = ("bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant", "bnb_4bit_quant_type")
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
]
Optimizer = Literal["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adamw_8bit", "paged_adamw_8bit"]


class TrainingConfig(PluginConfig):
    model_name_or_path: str = Field(
        "small",
        min_length=1,
        description=(
            "The model to fine-tune: a registry name (tiny, small), a local path or a hub id; or a PEFT adapter "
            "folder (adapter_config.json), whose training then continues on its base model."
        ),
    )
    training_method: Method = Field(
        "lora", description="full: train every weight; lora/dora: train low-rank adapters; qlora: LoRA on a 4-bit base."
    )
    learning_rate: float = Field(
        2e-4,
        gt=0,
        lt=1,
        description="Peak learning rate; typical values: 1e-4 to 3e-4 for LoRA, 1e-5 to 5e-5 for full.",
    )
    batch_size: int = Field(4, gt=0, description="Micro-batch size per device (packed rows per step).")
    gradient_accumulation_steps: int = Field(
        1,
        gt=0,
        description="Micro-batches accumulated per optimizer step; effective batch = batch_size x this x devices.",
    )
    num_epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many optimizer steps (overrides num_epochs)."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps; set this or warmup_ratio, not both.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warm-up as a fraction of the total steps.")
    lr_scheduler: Scheduler = Field("cosine", description="Learning-rate schedule after the warm-up.")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="Decoupled weight decay of AdamW.")
    logging_steps: int = Field(10, gt=0, description="Report loss, learning rate and throughput every this many steps.")
    save_steps: int | None = Field(
        100, gt=0, description="Write a checkpoint every this many steps; null saves only at the end and on Ctrl-C."
    )
    evaluation_steps: int | None = Field(
        None, gt=0, description="Evaluate the validation set every this many steps; null evaluates at each epoch end."
    )
    save_total_limit: int = Field(2, gt=0, description="Checkpoints kept: the newest this many, plus the best.")
    seed: int | None = Field(None, description="Random seed of the training; null uses the run's seed.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where the device has it natively, fp16 on older GPUs, fp32 on CPUs."
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="Recompute activations in the backward pass to save memory; auto turns it on only when needed.",
    )
    auto_fit: bool = Field(
        True,
        description="When the memory plan does not fit: enable checkpointing, then halve the batch and double accumulation.",
    )
    memory_budget_gb: float | None = Field(
        None, gt=0, description="Memory the run may use, in GiB; null uses the device's free memory."
    )
    optim: Optimizer = Field(
        "adamw_torch_fused",
        description="Optimizer; the fused AdamW kernel is the fastest (CPU and GPU), the 8-bit ones need bitsandbytes and save memory.",
    )
    max_grad_norm: float = Field(1.0, ge=0, description="Clip gradients to this norm; 0 disables clipping.")
    early_stopping_patience: int | None = Field(
        None,
        gt=0,
        description="Stop after this many evaluations without a lower validation loss; null never stops early.",
    )
    lora_r: int = Field(16, gt=0, description="LoRA rank: higher adapts more and costs more memory.")
    lora_alpha: float = Field(
        32, gt=0, description="LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."
    )
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input; 0 is faster.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="Layers that get adapters: all-linear, or names such as [q_proj, v_proj]."
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Layers trained in full beside the adapters, e.g. [lm_head]: helps weak base models and new tokens.",
    )
    load_in_4bit: bool = Field(False, description="Load the base model in 4-bit with bitsandbytes (QLoRA).")
    bnb_4bit_compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Dtype of the 4-bit matmuls; auto follows the resolved precision."
    )
    bnb_4bit_use_double_quant: bool = Field(
        True, description="Also quantize the quantization constants (saves ~0.4 bit/weight)."
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="4-bit data type; nf4 suits normally distributed weights."
    )
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = Field(
        "none", description="Also send metrics to this tracker (metrics.csv/jsonl are always written)."
    )
    resume_from_checkpoint: str | None = Field(
        None,
        description="auto: continue from the newest complete checkpoint if any; a path: that checkpoint; null: fresh.",
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub; only for models you trust.")
    allow_pickle: bool = Field(
        False,
        description="Load pickle weights (.bin, .pt) when a model has no .safetensors: unpickling can run code "
        "hidden in the file, so only for files you trust; converting them to safetensors is safer.",
    )
    dataloader_num_workers: int = Field(
        0, ge=0, description="Worker processes feeding batches; 0 is fastest for pre-tokenized data."
    )

    @model_validator(mode="after")
    def check_warmup(self) -> TrainingConfig:
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("set warmup_steps or warmup_ratio, not both")
        return self

    @field_validator("load_in_4bit")
    @classmethod
    def check_full_not_quantized(cls, load_in_4bit: bool, info: ValidationInfo) -> bool:
        # A field validator, so that the error points at the load_in_4bit line (or its --set).
        if load_in_4bit and info.data.get("training_method") == "full":
            raise ValueError(
                "full fine-tuning cannot train a 4-bit base model (training_method: full); set "
                "load_in_4bit: false (--set load_in_4bit=false), or use training_method: qlora"
            )
        return load_in_4bit


class ResolvedTrainingConfig(TrainingConfig):
    """``training.config``: the settings of TrainingConfig with every auto and implied value made explicit."""

    seed: int = Field(description="Random seed of the training (the run's seed when the block sets none).")
    precision: Literal["fp32", "bf16", "fp16"] = Field(description="The precision resolved for the device.")
    device: Literal["cuda", "mps", "cpu"] = Field(description="The kind of device the training runs on.")
    model_path: str = Field(min_length=1, description="Where the model's files are: a folder, a file or a hub id.")
    adapter_path: str | None = Field(
        None,
        description=(
            "The PEFT adapter folder model_name_or_path named, continued by the training (its rank and target "
            "modules as saved); model_name_or_path is then its base model. Null: a fresh adapter, or none."
        ),
    )
    total_params: int = Field(gt=0, description="Parameters of the model, counted from its config.")

    @model_validator(mode="after")
    def check_qlora_loads_in_4bit(self) -> ResolvedTrainingConfig:
        if self.training_method == "qlora" and not self.load_in_4bit:
            raise ValueError("a resolved qlora configuration loads the base in 4-bit (load_in_4bit: true)")
        return self


def _has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def _require_bitsandbytes() -> None:
    if not _has_bitsandbytes():
        raise ConfigError(
            Problem(
                "4-bit loading (QLoRA) needs bitsandbytes, which is not installed. Install it with "
                "`pip install bitsandbytes`, or use training_method: lora.",
                path="training_method",
            )
        )


def _check_precision_on_this_device(precision: str) -> None:
    """An explicit bf16/fp16 the device cannot run raises ConfigError (``auto`` and fp32 always fit)."""
    if precision in ("bf16", "fp16"):
        from plugins.training.device import detect_device
        from plugins.training.precision import resolve_precision

        resolve_precision(precision, detect_device())


def _errors_of(check: Callable[[], None], key: str) -> list[Finding]:
    try:
        check()
    except ConfigError as exc:
        return [Finding(problem.message, key=key, error=True) for problem in exc.problems]
    return []


def _ignored(config: TrainingConfig, names: tuple[str, ...], reason: str) -> list[Finding]:
    written = [name for name in names if name in config.model_fields_set]
    return [Finding(f"{', '.join(written)} ignored: {reason}", key=written[0])] if written else []


def _method_findings(config: TrainingConfig) -> list[Finding]:
    """Settings the training method overrides or never reads: announced, not refused."""
    method, four_bit = config.training_method, config.load_in_4bit
    findings = []
    if method == "qlora" and not four_bit and "load_in_4bit" in config.model_fields_set:
        findings.append(
            Finding("load_in_4bit: false overridden: training_method qlora trains on a 4-bit base", "load_in_4bit")
        )
    if method in ("lora", "dora") and four_bit:
        findings.append(
            Finding(
                f"training_method {method} with load_in_4bit: true trains the adapters on a 4-bit base "
                "(that is QLoRA); set load_in_4bit: false to train them on the full-precision base",
                "load_in_4bit",
            )
        )
    if method == "full":
        findings += _ignored(config, ADAPTER_SETTINGS, "a full fine-tune trains every weight, with no adapters")
    if method != "qlora" and not four_bit:
        findings += _ignored(config, FOUR_BIT_SETTINGS, "the base model is not loaded in 4-bit")
    return findings


def _check_fsdp_layer_classes(name: str, architecture: str, shape) -> None:
    """An FSDP launch whose layer classes to wrap are not in the model stops here, before any
    weight is read, rather than in every rank once the model is loaded."""
    from plugins.training.sharding import fsdp_layer_classes_to_wrap

    unknown = [cls for cls in fsdp_layer_classes_to_wrap() if cls not in shape.module_classes]
    if not unknown:
        return
    layers = ", ".join(shape.decoder_layer_classes) or "none declared"
    raise ConfigError(
        Problem(
            f"the accelerate config wraps {', '.join(unknown)} for FSDP (FSDP_TRANSFORMER_CLS_TO_WRAP), but "
            f"{name!r} ({architecture}) has no layer of that class; its decoder layer classes are: {layers}. Set "
            "fsdp_transformer_layer_cls_to_wrap in the accelerate config (--config_file) to one of these, or "
            "leave it out to wrap the model's own decoder layers.",
            path="fsdp_transformer_layer_cls_to_wrap",
        )
    )


class TrainingConfigPlugin(Plugin):
    name = "training_config"
    description = "Resolve and check the training hyper-parameters, the method and the precision."
    supported_stages = (Stage.PARSE,)
    provides = (memory_keys.TRAINING_CONFIG,)

    ConfigModel = TrainingConfig

    def check_workflow(self, plugins) -> list[Finding]:
        findings = _method_findings(self.config)
        if self.config.training_method == "qlora" or self.config.load_in_4bit:
            findings += _errors_of(_require_bitsandbytes, "training_method")
        return findings + _errors_of(lambda: _check_precision_on_this_device(self.config.precision), "precision")

    async def _execute_impl(self, context) -> str:
        resolved = await asyncio.to_thread(self.resolve, seed=context.seed, log=context.log, warn=context.warn)
        context.remember(memory_keys.TRAINING_CONFIG, resolved)
        continued = f" (continuing the adapter {resolved.adapter_path})" if resolved.adapter_path else ""
        return (
            f"{resolved.training_method} on {resolved.model_name_or_path}{continued}, {resolved.precision}, "
            f"lr {resolved.learning_rate:g}, batch {resolved.batch_size}x{resolved.gradient_accumulation_steps}"
        )

    def resolve(
        self, *, seed: int, log: Callable[[str], None], warn: Callable[[str], None] | None = None
    ) -> ResolvedTrainingConfig:
        """The config with every 'auto' and implied setting made explicit; reads the model's config only
        (for an adapter folder, its base model's)."""
        from plugins.models import load_model_config, resolve_model
        from plugins.models.loaders import check_model_files
        from plugins.training.device import detect_device
        from plugins.training.model_shape import linear_suffixes, model_shape, unmatched_target_modules
        from plugins.training.precision import resolve_precision

        config = self.config
        adapter = self._adapter_to_continue(log, warn or log)
        name = adapter.base_model if adapter else config.model_name_or_path
        load_in_4bit = config.load_in_4bit
        if config.training_method == "qlora" and not load_in_4bit:
            load_in_4bit = True
            log("training_method qlora: set load_in_4bit: true (QLoRA trains adapters on a 4-bit base)")
        if load_in_4bit:
            _require_bitsandbytes()
        device = detect_device()
        precision = resolve_precision(config.precision, device)
        spec = resolve_model(name)
        model_config = load_model_config(name, trust_remote_code=config.trust_remote_code)
        check_model_files(name, allow_pickle=config.allow_pickle)
        try:
            shape = model_shape(model_config)
        except (ValueError, KeyError) as exc:
            raise ConfigError(
                Problem(
                    f"the architecture of {name!r} ({type(model_config).__name__}) cannot be loaded as a causal "
                    f"language model by this transformers version ({exc}). Choose a causal LM (Llama, Qwen, "
                    "Mistral, ...).",
                    path="model_name_or_path",
                )
            ) from exc
        _check_fsdp_layer_classes(name, (model_config.architectures or [type(model_config).__name__])[0], shape)
        if config.training_method != "full" and adapter is None:
            missing = unmatched_target_modules(shape, config.target_modules)
            if missing:
                raise ConfigError(
                    Problem(
                        f"target_modules {missing} match no linear layer of {name}. "
                        f"Its layers are named {linear_suffixes(shape)}; use some of these or all-linear.",
                        path="target_modules",
                    )
                )
        return ResolvedTrainingConfig.model_validate(
            {
                **config.model_dump(),
                "model_name_or_path": name,
                "adapter_path": adapter.path if adapter else None,
                "seed": seed if config.seed is None else config.seed,
                "load_in_4bit": load_in_4bit,
                "precision": precision,
                "device": device.kind,
                "model_path": spec.path,
                "resume_from_checkpoint": self._checked_resume(config.resume_from_checkpoint),
                "total_params": shape.total_params,
            }
        )

    def _adapter_to_continue(self, log: Callable[[str], None], warn: Callable[[str], None]):
        """The PEFT adapter folder model_name_or_path points at (an AdapterFolder), else None."""
        from plugins.models.adapters import is_adapter_folder, read_adapter_folder
        from plugins.training.starting_model import describe_adapter, warn_ignored_lora_settings

        config = self.config
        if not is_adapter_folder(config.model_name_or_path):
            return None
        adapter = read_adapter_folder(config.model_name_or_path)
        if config.training_method == "full":
            log(
                f"model_name_or_path {adapter.path} is a PEFT adapter: full training starts from it merged "
                f"into its base model {adapter.base_model}"
            )
            return adapter
        log(
            f"model_name_or_path {adapter.path} is a PEFT adapter ({describe_adapter(adapter.config)}): training continues "
            f"it on its base model {adapter.base_model}"
        )
        warn_ignored_lora_settings(warn, config, adapter.config)
        return adapter

    @staticmethod
    def _checked_resume(value: str | None) -> str | None:
        if value in (None, "auto"):
            return value
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ConfigError(
                Problem(
                    f"resume_from_checkpoint points to {path}, which does not exist. Give the folder of "
                    "a checkpoint (checkpoints/checkpoint-N in a run directory), or use auto.",
                    path="resume_from_checkpoint",
                )
            )
        return str(path.resolve())
