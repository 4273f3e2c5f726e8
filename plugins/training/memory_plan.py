"""Estimate peak training memory before any weight is loaded, and fit the run to the device.

The estimate adds up, in bytes: the weights at their storage dtype, the trainable (LoRA) weights,
their gradients and optimizer states, under autocast full training's low-precision weight copies, the activations kept for the backward pass (all layers, or
one layer plus each layer's input with gradient checkpointing), the logits and the loss's
softmax (of one chunk of tokens when the vocabulary is large: the chunked loss), and a framework
overhead (with bitsandbytes' own on a CPU for QLoRA). The activation and logits coefficients count the tensors
autograd saves in a Llama-style block; they were checked against measured peak RSS on CPU
(tests/training/test_memory_plan.py).

Preference training (``PreferenceRun``) runs differently: a step forwards ``sequences_per_example``
sequences per example (a chosen and a rejected one for dpo, ipo, orpo and simpo; one for kto), each
padded to the batch's longest (not packed, so no block-diagonal mask), and the length that counts is
the data's longest sequence. DPO, IPO and KTO also compare with a reference: with an adapter the
same model with the adapter off ("reference forward": a forward without gradients, which frees each
layer's tensors as it goes, and whose logits fit in what the backward pass needs next); for full
training a frozen copy of the model at the compute precision ("reference model", plus its forward),
or log-probabilities precomputed before training, which cost nothing while training. ORPO and
SimPO have no reference.

If the estimate exceeds the memory available, ``fit_to_memory`` enables gradient checkpointing,
then halves the micro-batch while doubling gradient accumulation (the effective batch stays the
same), and records every change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from plugins.training.chunked_loss import chunk_tokens, uses_chunked_loss
from plugins.training.model_shape import ModelShape, lora_target_layers
from plugins.training.preference.losses import TASK_OF_LOSS, LossName, needs_reference

if TYPE_CHECKING:
    from plugins.training_config import ResolvedTrainingConfig

Reference = Literal["none", "adapter_off", "frozen_copy", "precomputed"]

GIB = 1024**3
MIB = 1024**2
FP32 = 4

# Bytes per parameter of the optimizer state, per trainable parameter.
_OPTIMIZER_STATE_BYTES = {
    "adamw_torch": 8,
    "adamw_torch_fused": 8,
    "adamw_8bit": 2,
    "paged_adamw_8bit": 2,
    "sgd": 0,
    "adafactor": 1,  # factored second moment: rows + columns, a small fraction of the weights
}
# Framework memory that does not scale with the model: allocator pools, kernels' workspaces,
# the Trainer's own buffers (CPU, measured: 15-30 MiB), and the CUDA context (GPU).
_OVERHEAD_BYTES = {"cpu": 24 * MIB, "cuda": 600 * MIB, "mps": 300 * MIB}
# bitsandbytes' 4-bit path on a CPU: its first quantization allocates ~9 MiB of workspace, and
# glibc's malloc keeps what loading-then-quantizing freed (each weight loaded at the load dtype,
# then the quantization's own copy) and what dequantizing each layer in every forward and
# backward pass frees between the activations. malloc serves a request below its mmap threshold
# from its heaps and keeps the memory when it is freed; the threshold rises with use up to 32 MiB
# on 64-bit Linux, and larger requests are mmapped and go back to the system when freed. So the
# weights smaller than that count, and a 7B model's (64+ MiB each in fp32) do not. Measured, fp32
# on a CPU: 2.7x the quantized weights' bytes more resident than LoRA of SmolLM2-135M (106M
# quantized weights of <= 3.4 MiB, batch 8 at 256 and 512 tokens), 1.7-5x for `small` (5.6M, 21
# MiB: 15-85 MiB more), 1.4-2.1x of them resident right after loading SmolLM2 (benchmarks/RESULTS.md).
_QLORA_CPU_WORKSPACE_BYTES = 9 * MIB
_QLORA_CPU_RETAINED_PER_WEIGHT_BYTE = 2.5
_MALLOC_MMAP_THRESHOLD_MAX_BYTES = 32 * MIB
# Bytes per saved activation of full training or QLoRA under bf16/fp16 autocast: half of them are
# products (2 bytes), half residual-stream and norm tensors kept in fp32 (see _activation_bytes).
_MIXED_PRECISION_ACTIVATION_BYTES = 3
# Keep this share of the available memory free for what the estimate cannot see.
HEADROOM = 0.9
# Activation elements autograd keeps per token and decoder layer, in units of the hidden size
# (norm inputs/outputs, q/k/v before and after rotary, attention output, residuals) and of the
# MLP width (gate, up, activation, product).
_ACT_PER_HIDDEN = 10
_ACT_PER_KV = 3
_ACT_PER_INTERMEDIATE = 4
# LoRA keeps, per wrapped layer, more than full training does: the adapter path's input and
# gradient buffers (per input feature), the dropout output and mask when dropout is on, and for
# DoRA the base output it rescales (per output feature). Calibrated against measured peak RSS.
_LORA_PER_INPUT = 1.3
_LORA_DROPOUT_PER_INPUT = 1.65
_DORA_PER_OUTPUT = 2.0
# With gradient checkpointing one block is recomputed at a time; its activations and their
# gradients are alive together during its backward pass.
_RECOMPUTED_LAYER_FACTOR = 1.75
# Logits, their float copy for the loss, the saved log-softmax, and the gradient.
_LOGITS_COPIES = 4
# bitsandbytes 4-bit: half a byte per weight plus block scales (double-quantized).
_NF4_BYTES_PER_PARAM = 0.5 + 1 / 64
# The preference losses' chunked loss, beside the log-softmax every chunk keeps: one chunk's
# working copies (its logits at the compute dtype, their float copy, then their gradients).
# Measured on CPU in bf16, vocabulary 32768: 1.8 (benchmarks/RESULTS.md, preference section).
_PREFERENCE_CHUNK_WORKING_COPIES = 2


class TrainingShape(BaseModel):
    """The knobs of a run that change its memory use: the settings a run trains with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["full", "lora", "dora", "qlora"] = Field(description="The training method.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(description="The resolved precision.")
    batch_size: int = Field(gt=0, description="Micro-batch size per device.")
    gradient_accumulation_steps: int = Field(gt=0, description="Micro-batches per optimizer step.")
    max_seq_length: int = Field(
        gt=0,
        description="Tokens per row: a packed row's, or the longest padded sequence of preference data.",
    )
    gradient_checkpointing: bool = Field(description="Whether activations are recomputed in the backward pass.")
    lora_r: int = Field(16, gt=0, description="LoRA rank.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field("all-linear", description="Layers that get adapters.")
    optim: str = Field("adamw_torch_fused", description="The optimizer.")
    device_kind: str = Field("cpu", description="cuda, mps or cpu.")
    modules_to_save: tuple[str, ...] = Field((), description="Layers trained in full beside the adapters.")
    distributed: bool = Field(
        False,
        description="A distributed launch: DDP/FSDP wrap the model, which then computes its own full-logits loss.",
    )
    packed: bool = Field(True, description="Rows pack several samples (a block-diagonal mask); False: padded.")
    sequences_per_example: int = Field(
        1, ge=1, le=2, description="Sequences a step forwards per example of the batch: 2 for preference pairs."
    )
    reference: Reference = Field(
        "none",
        description=(
            "Preference training's reference model: none, the model with its adapter off (a second forward), "
            "a frozen copy (its weights and a second forward), or log-probabilities precomputed before training."
        ),
    )
    answer_tokens: int | None = Field(
        None,
        gt=0,
        description=(
            "Preference data: the longest answer in tokens, the positions whose logits the chunked loss keeps for "
            "the backward pass; None: max_seq_length."
        ),
    )

    @property
    def sequences(self) -> int:
        """Sequences in a micro-batch."""
        return self.batch_size * self.sequences_per_example


class PreferenceRun(BaseModel):
    """What preference training adds to the plan: its loss, where its reference comes from, and the
    lengths of the tokenized data (None before the data is prepared: max_seq_length)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    loss: LossName = Field(description="The preference loss: dpo, ipo, orpo, simpo or kto.")
    precompute_ref_logps: bool = Field(False, description="Reference log-probabilities computed before training.")
    longest_sequence: int | None = Field(None, gt=0, description="Tokens of the data's longest sequence.")
    longest_answer: int | None = Field(None, gt=0, description="Trained (answer) tokens of the longest answer.")

    def shape_fields(self, method: str, max_seq_length: int) -> dict[str, Any]:
        """The TrainingShape fields of this run trained with ``method``."""
        if not needs_reference(self.loss):
            reference = "none"
        elif self.precompute_ref_logps:
            reference = "precomputed"
        else:
            reference = "frozen_copy" if method == "full" else "adapter_off"
        length = min(self.longest_sequence or max_seq_length, max_seq_length)
        return {
            "packed": False,
            "sequences_per_example": 2 if TASK_OF_LOSS[self.loss] == "preference" else 1,
            "reference": reference,
            "max_seq_length": length,
            "answer_tokens": min(self.longest_answer, length) if self.longest_answer else None,
        }


class MemoryPlan(BaseModel):
    """``training.memory_plan``: the peak-memory estimate, what auto-fit changed, the settings to train with."""

    model_config = ConfigDict(frozen=True)  # extra keys ignored: a dump also holds peak_bytes and fits

    settings: TrainingShape = Field(description="The settings to train with (after auto-fit).")
    components: dict[str, int] = Field(description="Estimated bytes per component (weights, activations, ...).")
    available_bytes: int = Field(ge=0, description="Memory the run may use.")
    device_name: str = Field(description="The device the estimate is for.")
    total_params: int = Field(ge=0, description="Parameters of the model.")
    trainable_params: int = Field(ge=0, description="Parameters that training updates.")
    changes: list[str] = Field(default_factory=list, description="What auto-fit changed, in order.")

    @computed_field(description="The estimated peak: the sum of the components.")
    @property
    def peak_bytes(self) -> int:
        return sum(self.components.values())

    @computed_field(description="Whether the estimate fits the memory available, with headroom.")
    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.available_bytes * HEADROOM


# The plan of one setting: (shape, settings, available_bytes=, device_name=) -> MemoryPlan.
Estimator = Callable[..., MemoryPlan]


def lora_parameter_count(shape: ModelShape, settings: TrainingShape) -> int:
    layers = lora_target_layers(shape, settings.target_modules)
    count = sum(settings.lora_r * (layer.in_features + layer.out_features) for layer in layers)
    if settings.method == "dora":
        count += sum(layer.out_features for layer in layers)  # the magnitude vector
    return count


def saved_module_parameter_count(shape: ModelShape, names: tuple[str, ...]) -> int:
    """Parameters of the layers trained in full beside the adapters (``modules_to_save``)."""
    count = 0
    for name in names:
        linears = [layer for layer in shape.linear_layers if layer.name == name or layer.name.endswith("." + name)]
        if linears:
            count += sum(layer.in_features * layer.out_features for layer in linears)
        elif "embed" in name or name == "wte":
            count += shape.embedding_params
    return count


def _activation_bytes(shape: ModelShape, settings: TrainingShape) -> int:
    tokens = settings.sequences * settings.max_seq_length
    # Autocast runs only the matrix products in bf16/fp16; the other tensors keep the dtype of the
    # weights they come from. Over a LoRA/DoRA base stored at the compute dtype that is 2 bytes
    # throughout. Full training (fp32 master weights) and QLoRA (k-bit preparation upcasts the
    # embeddings and norms) keep an fp32 residual stream and norms beside the 2-byte products: 3
    # bytes on average. The adapter path is fp32 for every LoRA method: PEFT casts each input to the
    # adapter weights' dtype. Calibrated on a CPU with native bf16 (benchmarks/RESULTS.md, memory
    # plan section; tests/training/test_memory_plan.py).
    if settings.precision == "fp32":
        block_bytes = FP32
    else:
        block_bytes = 2 if settings.method in ("lora", "dora") else _MIXED_PRECISION_ACTIVATION_BYTES
    kv_dim = shape.hidden_size * shape.num_key_value_heads // max(shape.num_attention_heads, 1)
    block = _ACT_PER_HIDDEN * shape.hidden_size + _ACT_PER_KV * kv_dim + _ACT_PER_INTERMEDIATE * shape.intermediate_size
    adapter = 0.0
    if settings.method in ("lora", "dora", "qlora"):
        targets = lora_target_layers(shape, settings.target_modules)
        layers = max(shape.num_layers, 1)
        inputs = sum(layer.in_features for layer in targets) / layers
        per_input = _LORA_PER_INPUT + (_LORA_DROPOUT_PER_INPUT if settings.lora_dropout > 0 else 0)
        adapter = per_input * inputs + settings.lora_r * len(targets) / layers
        if settings.method == "dora":
            adapter += _DORA_PER_OUTPUT * sum(layer.out_features for layer in targets) / layers
    per_layer_bytes = block * block_bytes + adapter * FP32
    if settings.gradient_checkpointing:
        kept_inputs = shape.hidden_size * shape.num_layers * block_bytes  # each block's input
        activations = tokens * (kept_inputs + _RECOMPUTED_LAYER_FACTOR * per_layer_bytes)
    else:
        activations = tokens * per_layer_bytes * shape.num_layers
    # The block-diagonal mask of padding-free packing: one byte per token pair. Padded sequences
    # need none: the padding is on the right, so SDPA's causal kernel runs without a mask.
    mask = settings.batch_size * settings.max_seq_length**2 if settings.packed else 0
    return int(activations + mask)


def _logits_bytes(shape: ModelShape, settings: TrainingShape) -> int:
    """The logits and the loss's copies of them: for the whole batch, or for one chunk of tokens
    when the vocabulary is large enough for the chunked loss (plugins/training/chunked_loss.py).
    The preference losses' chunks keep their log-softmax for the backward pass: one copy of the
    logits at every answer position of the batch, beside one chunk's working copies."""
    tokens = settings.sequences * settings.max_seq_length
    if not uses_chunked_loss(shape.vocab_size) or settings.distributed:
        return int(tokens * shape.vocab_size * FP32 * _LOGITS_COPIES)
    chunk = min(tokens, chunk_tokens(shape.vocab_size))
    if settings.packed:
        return int(chunk * shape.vocab_size * FP32 * _LOGITS_COPIES)
    answers = settings.sequences * (settings.answer_tokens or settings.max_seq_length)
    return int((answers + chunk * _PREFERENCE_CHUNK_WORKING_COPIES) * shape.vocab_size * FP32)


def _reference_model_bytes(shape: ModelShape, settings: TrainingShape) -> int:
    """Full preference training's frozen copy of the model, at the compute precision."""
    if settings.reference != "frozen_copy":
        return 0
    return shape.total_params * (FP32 if settings.precision == "fp32" else 2)


def _reference_forward_bytes(shape: ModelShape, settings: TrainingShape) -> int:
    """A reference forward without gradients, run after the policy's forward: each layer's tensors
    are freed as the next one runs, so it adds one layer's working set (its input, the MLP's gate
    and up projections). Its logits and log-softmax fit in what the backward pass needs next
    (``_LOGITS_COPIES``): only the policy's saved log-softmax is alive beside them. Measured on
    CPU: 7-13 MiB over SimPO's and precomputed DPO's peak (benchmarks/RESULTS.md)."""
    if settings.reference not in ("adapter_off", "frozen_copy"):
        return 0
    width = FP32 if settings.precision == "fp32" else 2
    return settings.sequences * settings.max_seq_length * (shape.hidden_size + 2 * shape.intermediate_size) * width


def quantized_weight_bytes(shape: ModelShape) -> int:
    """QLoRA: the 4-bit weights of the decoder's linear layers, block scales included."""
    return int(_quantized_params(shape) * _NF4_BYTES_PER_PARAM)


def _quantized_params(shape: ModelShape) -> int:
    """Weights of the decoder's linear layers: what 4-bit loading quantizes."""
    return sum(layer.in_features * layer.out_features for layer in shape.per_layer_linears())


def _qlora_cpu_retained_bytes(shape: ModelShape, settings: TrainingShape) -> int:
    """What the allocator keeps of loading, quantizing and dequantizing the 4-bit weights on a CPU:
    a multiple of the bytes, at the load dtype, of the weights under malloc's mmap ceiling."""
    load_bytes = FP32 if settings.precision == "fp32" else 2
    kept = 0
    for layer in shape.per_layer_linears():
        size = layer.in_features * layer.out_features * load_bytes
        if size < _MALLOC_MMAP_THRESHOLD_MAX_BYTES:
            kept += size
    return int(kept * _QLORA_CPU_RETAINED_PER_WEIGHT_BYTE)


def _autocast_weight_copy_bytes(shape: ModelShape, settings: TrainingShape) -> int:
    """Full training under bf16/fp16 autocast: each linear layer's fp32 weight is cast once per
    forward pass, and the cast is kept until the backward pass has used it (2 bytes a weight)."""
    if settings.method != "full" or settings.precision == "fp32":
        return 0
    return 2 * sum(layer.in_features * layer.out_features for layer in shape.linear_layers)


def _weight_bytes(shape: ModelShape, settings: TrainingShape) -> int:
    if settings.method == "qlora":
        quantized = _quantized_params(shape)
        # Non-quantized weights (embeddings, norms, head) are upcast to fp32 by k-bit preparation.
        return quantized_weight_bytes(shape) + (shape.total_params - quantized) * FP32
    if settings.method == "full" or settings.precision == "fp32":
        return shape.total_params * FP32  # full training keeps fp32 master weights
    return shape.total_params * 2  # a frozen base at the compute dtype


def estimate_peak_memory(
    shape: ModelShape, settings: TrainingShape, *, available_bytes: int, device_name: str
) -> MemoryPlan:
    """The peak-memory estimate of one training configuration, split into its components."""
    if settings.method == "full":
        trainable = shape.total_params
        adapter = 0
    else:
        adapter = lora_parameter_count(shape, settings)
        # PEFT trains a copy of each saved module, so its weights are stored twice.
        saved = saved_module_parameter_count(shape, settings.modules_to_save)
        trainable = adapter + saved
        adapter += saved
    optimizer_bytes = _OPTIMIZER_STATE_BYTES.get(settings.optim, 8)
    overhead = _OVERHEAD_BYTES.get(settings.device_kind, _OVERHEAD_BYTES["cpu"])
    if settings.method == "qlora" and settings.device_kind == "cpu":
        overhead += _QLORA_CPU_WORKSPACE_BYTES + _qlora_cpu_retained_bytes(shape, settings)
    components = {
        "weights": _weight_bytes(shape, settings),
        "adapter weights": adapter * FP32,
        "gradients": trainable * FP32,
        "optimizer states": trainable * optimizer_bytes,
        "activations": _activation_bytes(shape, settings),
        "logits and loss": _logits_bytes(shape, settings),
        "framework overhead": overhead,
    }
    if copies := _autocast_weight_copy_bytes(shape, settings):
        components["autocast weight copies"] = copies
    if reference_model := _reference_model_bytes(shape, settings):
        components["reference model"] = reference_model
    if reference_forward := _reference_forward_bytes(shape, settings):
        components["reference forward"] = reference_forward
    return MemoryPlan(
        settings=settings,
        components=components,
        available_bytes=int(available_bytes),
        device_name=device_name,
        total_params=shape.total_params,
        trainable_params=trainable,
    )


def fit_to_memory(
    shape: ModelShape,
    settings: TrainingShape,
    *,
    available_bytes: int,
    device_name: str,
    allow_gradient_checkpointing: bool = True,
    estimate: Estimator | None = None,
) -> MemoryPlan:
    """Enable gradient checkpointing, then trade micro-batch for accumulation until the plan fits.

    ``estimate`` makes the plan of one setting (default ``estimate_peak_memory``, one process; the
    per-rank plan of a sharding strategy passes its own)."""
    estimate = estimate or estimate_peak_memory
    changes: list[str] = []
    plan = estimate(shape, settings, available_bytes=available_bytes, device_name=device_name)
    if not plan.fits and allow_gradient_checkpointing and not settings.gradient_checkpointing:
        settings = settings.model_copy(update={"gradient_checkpointing": True})
        before = plan.peak_bytes
        plan = estimate(shape, settings, available_bytes=available_bytes, device_name=device_name)
        changes.append(
            f"enabled gradient checkpointing (estimated peak {format_bytes(before)} -> {format_bytes(plan.peak_bytes)})"
        )
    while not plan.fits and settings.batch_size > 1:
        old_batch, old_accumulation = settings.batch_size, settings.gradient_accumulation_steps
        effective = old_batch * old_accumulation
        new_batch = old_batch // 2
        # Ceiling division keeps the effective batch when the micro-batch was odd.
        settings = settings.model_copy(
            update={"batch_size": new_batch, "gradient_accumulation_steps": -(-effective // new_batch)}
        )
        plan = estimate(shape, settings, available_bytes=available_bytes, device_name=device_name)
        changes.append(
            f"batch_size {old_batch} -> {settings.batch_size}, gradient_accumulation_steps "
            f"{old_accumulation} -> {settings.gradient_accumulation_steps} (effective batch "
            f"{effective} -> {settings.batch_size * settings.gradient_accumulation_steps}; estimated peak "
            f"{format_bytes(plan.peak_bytes)})"
        )
    return plan.model_copy(update={"changes": changes})


def format_bytes(count: float) -> str:
    if abs(count) >= GIB:
        return f"{count / GIB:.2f} GiB"
    return f"{count / MIB:.1f} MiB"


def render_plan(plan: MemoryPlan, console) -> None:
    """Print the plan as a rich table: one row per component, the total, the verdict, the changes."""
    from rich.table import Table

    s = plan.settings
    examples = f" examples of {s.sequences_per_example} sequences" if not s.packed else ""
    reference = f", reference {s.reference}" if s.reference != "none" else ""
    title = (
        f"Memory plan: {s.method}, {s.precision}, batch {s.batch_size}{examples} x accumulation "
        f"{s.gradient_accumulation_steps}, {s.max_seq_length} tokens{reference}, gradient checkpointing "
        f"{'on' if s.gradient_checkpointing else 'off'}"
    )
    table = Table(title=title, show_footer=False)
    table.add_column("component")
    table.add_column("estimate", justify="right")
    for name, value in plan.components.items():
        table.add_row(name, format_bytes(value))
    table.add_row("[bold]estimated peak[/bold]", f"[bold]{format_bytes(plan.peak_bytes)}[/bold]")
    table.add_row(f"available ({plan.device_name})", format_bytes(plan.available_bytes))
    verdict = "[green]fits[/green]" if plan.fits else "[red]does not fit[/red]"
    table.add_row("verdict", verdict)
    table.caption = f"{plan.trainable_params:,} trainable of {plan.total_params:,} parameters"
    console.print(table)
    for change in plan.changes:
        console.print(f"  auto-fit: {change}")


def plan_for_config(
    config: ResolvedTrainingConfig,
    max_seq_length: int,
    *,
    available_bytes: int | None = None,
    preference: PreferenceRun | None = None,
    rank_estimate: tuple[Estimator, str] | None = None,
) -> MemoryPlan:
    """The plan of a resolved ``training.config`` (see TrainingConfigPlugin.resolve), of supervised
    fine-tuning on packed rows, or of the preference training ``preference`` describes.

    Applies auto-fit when the config allows it. ``available_bytes`` defaults to
    ``memory_budget_gb`` if set, else the device's free memory. ``rank_estimate`` (an estimator and
    the launch in words: ``rank_memory_plan.launched_rank_estimator``) plans one rank of a
    distributed launch instead of the whole job on one device.
    """
    from plugins.training.device import detect_device

    device = detect_device()
    if available_bytes is None:
        budget = config.memory_budget_gb
        available_bytes = int(budget * GIB) if budget else device.free_memory_bytes
    shape, settings = shape_and_settings(config, max_seq_length, preference=preference, device_kind=device.kind)
    estimate, device_name = estimate_peak_memory, device.name
    if rank_estimate is not None:
        estimate, launch = rank_estimate
        device_name = f"{device.name}, one rank of {launch}"
    if not config.auto_fit:
        return estimate(shape, settings, available_bytes=available_bytes, device_name=device_name)
    return fit_to_memory(
        shape,
        settings,
        available_bytes=available_bytes,
        device_name=device_name,
        allow_gradient_checkpointing=allows_gradient_checkpointing(config),
        estimate=estimate,
    )


def allows_gradient_checkpointing(config: ResolvedTrainingConfig) -> bool:
    return config.gradient_checkpointing != False  # noqa: E712 ("auto" allows it)


def shape_and_settings(
    config: ResolvedTrainingConfig,
    max_seq_length: int,
    *,
    preference: PreferenceRun | None = None,
    device_kind: str,
    distributed: bool | None = None,
) -> tuple[ModelShape, TrainingShape]:
    """The model's shape (from its config, no weights) and the settings a resolved config trains with.
    ``distributed`` defaults to whether this process runs under a distributed launch."""
    from plugins.models import load_model_config
    from plugins.training.device import distributed_launch
    from plugins.training.model_shape import model_shape

    shape = model_shape(load_model_config(config.model_name_or_path, trust_remote_code=config.trust_remote_code))
    fields: dict[str, Any] = {"max_seq_length": max_seq_length}
    if preference is not None:
        fields = preference.shape_fields(config.training_method, max_seq_length)
    settings = TrainingShape(
        method=config.training_method,
        precision=config.precision,
        batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=config.gradient_checkpointing is True,
        lora_r=config.lora_r,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        optim=config.optim,
        device_kind=device_kind,
        modules_to_save=tuple(config.modules_to_save),
        distributed=distributed_launch() if distributed is None else distributed,
        **fields,
    )
    return shape, settings


def _sequence_length(plugins: list[Any]) -> int:
    """The data preparation step's ``max_seq_length``, else its default."""
    from plugins.data_preparation import DataPreparationPlugin

    preparation = next((p for p in plugins if isinstance(p, DataPreparationPlugin)), None)
    config = preparation.config if preparation else DataPreparationPlugin.ConfigModel()
    return config.max_seq_length


def preference_run_of(plugins: list[Any], task: str = "sft") -> PreferenceRun | None:
    """The workflow's preference training, read from its preference_training step's settings by
    field name; else, for preference data (``task`` of dataset.tokenized), that step's defaults."""
    step = next((p for p in plugins if p.plugin_name() == "preference_training"), None)
    if step is not None:
        return PreferenceRun(loss=step.config.loss, precompute_ref_logps=step.config.precompute_ref_logps)
    if task == "sft":
        return None
    return PreferenceRun(loss="kto" if task == "unpaired" else "dpo")


def workflow_training(workflow, *, log=print) -> tuple[ResolvedTrainingConfig, int, PreferenceRun | None]:
    """A loaded workflow's resolved training config, the sequence length of its data preparation
    step and its preference training (None for supervised fine-tuning).

    Raises ConfigError when the workflow has no training_config step or its settings are invalid.
    """
    from entity_training import ConfigError, Problem
    from plugins.training_config import TrainingConfigPlugin

    plugins = [step.plugin for step in workflow.steps]
    training = next((p for p in plugins if isinstance(p, TrainingConfigPlugin)), None)
    if training is None:
        raise ConfigError(Problem("the workflow has no training_config step, so there is no training to plan."))
    config = training.resolve(seed=workflow.run.seed, log=log)
    return config, _sequence_length(plugins), preference_run_of(plugins)


def plan_for_workflow(workflow, *, log=print) -> MemoryPlan:
    """The memory plan of a loaded workflow (``entity_training.workflow.Workflow``), without training.

    Raises ConfigError when the workflow has no training_config step or its settings are invalid.
    """
    config, max_seq_length, preference = workflow_training(workflow, log=log)
    return plan_for_config(config, max_seq_length, preference=preference)


def print_workflow_plan(workflow, console) -> MemoryPlan:
    """What ``entity-train plan CONFIG`` and scripts/estimate_memory.py print."""
    plan = plan_for_workflow(workflow, log=console.print)
    render_plan(plan, console)
    return plan
