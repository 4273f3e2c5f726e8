"""The peak memory of each rank of a multi-device run, for every way of sharding it, before any
weight is loaded; and the cheapest strategy that fits a number of devices of a given memory.

A rank's plan starts from the single-process plan (``memory_plan.estimate_peak_memory``, at the
per-rank micro-batch ``batch_size``, with the full-logits loss a wrapped model computes) and
divides by the number of devices what each strategy shards:

| strategy | shards | launch |
|---|---|---|
| ``ddp`` | nothing: a full copy of the model per rank | configs/accelerate/ddp.yaml, torchrun |
| ``zero1`` | optimizer states | DeepSpeed ZeRO stage 1 |
| ``zero2`` | optimizer states, gradients | DeepSpeed ZeRO stage 2 |
| ``fsdp_shard_grad_op`` | optimizer states, gradients, weights between steps | FSDP2, ``fsdp_reshard_after_forward: false`` |
| ``fsdp_full_shard`` | optimizer states, gradients, weights | configs/accelerate/fsdp.yaml (FSDP2) |
| ``zero3`` | optimizer states, gradients, weights | DeepSpeed ZeRO stage 3 |
| ``fsdp_full_shard_offload`` | as full shard, the shards in host memory | FSDP2, ``fsdp_offload_params: true`` |
| ``zero3_offload`` | as ZeRO-3, the shards in host memory | ZeRO-3, ``offload_param`` and ``offload_optimizer`` on cpu |

``STRATEGIES`` lists them cheapest first, "cheapest" meaning the least communication and the
fewest moving parts: DDP all-reduces the gradients once per step; ZeRO-1 adds an all-gather of
the updated weights; ZeRO-2 and shard-grad-op reduce-scatter the gradients; full sharding also
all-gathers every unit's weights in the forward and again in the backward pass; offloading adds
host-device copies of every shard and runs the optimizer step on the CPU. Within one level the
smaller peak comes first.

The terms a strategy adds to the single-process ones (each a component of the rank's plan):

- **gradient buckets** (DDP): DDP copies every gradient into flat buckets (25 MiB each) that it
  all-reduces; with its default ``gradient_as_bucket_view=False`` (accelerate's and the Trainer's)
  the buckets are a second copy of all the gradients.
- **communication buckets** (ZeRO-1/2): DeepSpeed's reduce and all-gather buckets, hidden_size²
  elements each (the Trainer's ``auto`` value of ``reduce_bucket_size``).
- **fp32 master weights and gradients** (ZeRO under bf16/fp16): DeepSpeed trains the module at the
  compute precision and keeps an fp32 copy of the trainable weights and of their gradients with
  the optimizer states, sharded like them (8 bytes a trainable parameter); the weights and
  gradients of the module are then 2 bytes each. FSDP2 instead keeps the fp32 weights sharded and
  casts what it gathers (accelerate upcasts trainable parameters to fp32).
- **gathered units** (full shard, ZeRO-3): a unit's weights are all-gathered, at the compute
  precision, before it runs: the largest unit (a decoder layer, the embeddings, or the LM head
  with the final norm, which stays gathered from the end of the forward pass to the start of the
  backward pass) and the decoder layer prefetched beside it. This replaces the autocast weight
  copies of the single-process plan.
- **gathered weights** (shard-grad-op): the weights stay gathered from the forward pass to the
  backward pass: all of them, at the compute precision, beside their shards.
- **unit gradients** (full shard, shard-grad-op, ZeRO-3): the full gradient of the largest trainable
  unit, alive until its reduce-scatter has sharded it.
- **host memory** (offload): the shards of weights, gradients and optimizer states live in the
  host's memory (per rank; one machine's ranks together need the sum), and the optimizer step runs
  there; the device keeps the gathered units, their gradients, the activations and the logits.

With LoRA only the adapters (and ``modules_to_save``) have gradients and optimizer states; the
frozen base is still sharded by full shard, shard-grad-op and ZeRO-3. QLoRA's 4-bit weights are
not sharded (accelerate leaves FSDP2 out of uint8 ``Params4bit``): every rank holds all of them.
The activations, the logits and the framework overhead are per rank and do not shrink with the
number of devices: only a smaller micro-batch, a shorter sequence or gradient checkpointing lowers
them (auto-fit, as in the single-process plan).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from plugins.training.memory_plan import (
    FP32,
    Estimator,
    MemoryPlan,
    TrainingShape,
    estimate_peak_memory,
    fit_to_memory,
    lora_parameter_count,
    quantized_weight_bytes,
    saved_module_parameter_count,
)
from plugins.training.model_shape import ModelShape

Strategy = Literal[
    "ddp",
    "zero1",
    "zero2",
    "fsdp_shard_grad_op",
    "fsdp_full_shard",
    "zero3",
    "fsdp_full_shard_offload",
    "zero3_offload",
]


@dataclass(frozen=True)
class Sharding:
    """What a strategy shards across the ranks, and its place in the cost order."""

    cost: int  # 0 DDP, 1 ZeRO-1, 2 ZeRO-2 / shard-grad-op, 3 full shard, 4 offload
    optimizer: bool
    gradients: bool
    weights: bool  # at rest; shard-grad-op gathers them all from forward to backward
    gathers_units: bool  # one unit at a time (full shard, ZeRO-3)
    offload: bool
    deepspeed: bool
    summary: str
    launch: str  # the accelerate configuration or flags that select it


_FSDP = "--config_file configs/accelerate/fsdp.yaml"
_ZERO = "--use_deepspeed --zero_stage"
SHARDINGS: dict[Strategy, Sharding] = {
    "ddp": Sharding(0, False, False, False, False, False, False, "nothing", "--config_file configs/accelerate/ddp.yaml"),
    "zero1": Sharding(1, True, False, False, False, False, True, "optimizer", f"{_ZERO} 1"),
    "zero2": Sharding(2, True, True, False, False, False, True, "optimizer, gradients", f"{_ZERO} 2"),
    "fsdp_shard_grad_op": Sharding(
        2, True, True, True, False, False, False, "optimizer, gradients, weights at rest",
        f"{_FSDP} --fsdp_reshard_after_forward false",
    ),
    "fsdp_full_shard": Sharding(3, True, True, True, True, False, False, "optimizer, gradients, weights", _FSDP),
    "zero3": Sharding(3, True, True, True, True, False, True, "optimizer, gradients, weights", f"{_ZERO} 3"),
    "fsdp_full_shard_offload": Sharding(
        4, True, True, True, True, True, False, "all, in host memory", f"{_FSDP} --fsdp_offload_params true"
    ),
    "zero3_offload": Sharding(
        4, True, True, True, True, True, True, "all, in host memory",
        f"{_ZERO} 3 --offload_param_device cpu --offload_optimizer_device cpu",
    ),
}  # fmt: skip
STRATEGIES: tuple[Strategy, ...] = tuple(SHARDINGS)

# The single-process components that live in host memory when a strategy offloads.
_SHARDED_STATE = (
    "weights",
    "adapter weights",
    "gradients",
    "optimizer states",
    "fp32 master weights and gradients",
    "reference model",
)


class RankPlan(BaseModel):
    """One strategy's plan for one rank: at the configured settings, and after auto-fit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy = Field(description="How the run is sharded.")
    devices: int = Field(gt=0, description="Devices (ranks) the run is spread over.")
    plan: MemoryPlan = Field(description="A rank's device memory at the configured settings.")
    fitted: MemoryPlan | None = Field(
        None,
        description="The plan after auto-fit, when the configured settings do not fit and auto-fit may change them.",
    )
    host_bytes: int = Field(ge=0, description="Host memory a rank needs for its offloaded shards (0 without offload).")

    @property
    def best(self) -> MemoryPlan:
        """The plan the run would train with: the fitted one when there is one."""
        return self.fitted or self.plan

    @property
    def fits(self) -> bool:
        return self.best.fits


def estimate_rank_peak(
    shape: ModelShape,
    settings: TrainingShape,
    *,
    strategy: Strategy,
    devices: int,
    available_bytes: int,
    device_name: str,
) -> MemoryPlan:
    """The device memory of one rank of ``strategy`` over ``devices`` ranks (see the module's terms).
    The host memory of an offloading strategy is ``offloaded_host_bytes``."""
    return _rank_plan(shape, settings, strategy, devices, available_bytes, device_name)[0]


def offloaded_host_bytes(shape: ModelShape, settings: TrainingShape, *, strategy: Strategy, devices: int) -> int:
    return _rank_plan(shape, settings, strategy, devices, 0, "host")[1]


def _rank_plan(
    shape: ModelShape, settings: TrainingShape, strategy: Strategy, devices: int, available_bytes: int, device_name: str
) -> tuple[MemoryPlan, int]:
    sharding = SHARDINGS[strategy]
    single = estimate_peak_memory(
        shape,
        settings.model_copy(update={"distributed": True}),
        available_bytes=available_bytes,
        device_name=device_name,
    )
    parts = dict(single.components)
    width = FP32 if settings.precision == "fp32" else 2
    trainable = single.trainable_params
    if sharding.deepspeed and width < FP32:
        if settings.method == "full":
            parts["weights"] = shape.total_params * width
        parts["adapter weights"] = parts["adapter weights"] // FP32 * width
        parts["gradients"] = trainable * width
        parts["fp32 master weights and gradients"] = trainable * 2 * FP32
    if sharding.gathers_units or sharding.weights or sharding.deepspeed:
        # The gathered (or DeepSpeed's own) compute-precision copies replace autocast's.
        parts.pop("autocast weight copies", None)
    if sharding.optimizer:
        for name in ("optimizer states", "fp32 master weights and gradients"):
            if name in parts:
                parts[name] //= devices
    if sharding.gradients:
        parts["gradients"] //= devices
    replicated = quantized_weight_bytes(shape) if settings.method == "qlora" else 0
    if sharding.weights:
        parts["weights"] = replicated + (parts["weights"] - replicated) // devices
        parts["adapter weights"] //= devices
        if "reference model" in parts:
            parts["reference model"] //= devices
    if strategy == "ddp" and devices > 1:
        parts["gradient buckets"] = parts["gradients"]
    if sharding.deepspeed and not sharding.weights:
        parts["communication buckets"] = 2 * shape.hidden_size**2 * width
    if sharding.gathers_units:
        largest, layer = _largest_unit_params(shape, settings), _layer_params(shape, settings)
        parts["gathered units"] = (largest + layer) * width
    elif sharding.weights:
        parts["gathered weights"] = _shardable_params(shape, settings) * width
    if sharding.weights:
        parts["unit gradients"] = _largest_trainable_unit_params(shape, settings) * width
    host = 0
    if sharding.offload:
        host = sum(parts.pop(name, 0) for name in _SHARDED_STATE) - replicated
        if replicated:  # QLoRA's 4-bit weights are not sharded, so not offloaded either
            parts["weights"] = replicated
    plan = MemoryPlan(
        settings=single.settings,
        components=parts,
        available_bytes=int(available_bytes),
        device_name=device_name,
        total_params=shape.total_params,
        trainable_params=trainable,
    )
    return plan, host


def _layer_params(shape: ModelShape, settings: TrainingShape) -> int:
    """One decoder layer's parameters, its adapters and norms included (QLoRA: its 4-bit weights
    left out: they are not sharded, so never gathered)."""
    layers = max(shape.num_layers, 1)
    linear = 0 if settings.method == "qlora" else _linear_params(shape)
    adapters = 0 if settings.method == "full" else lora_parameter_count(shape, settings)
    return (linear + adapters) // layers + 2 * shape.hidden_size


def _linear_params(shape: ModelShape) -> int:
    return sum(layer.in_features * layer.out_features for layer in shape.per_layer_linears())


def _largest_unit_params(shape: ModelShape, settings: TrainingShape) -> int:
    """The largest FSDP unit: a decoder layer, the embeddings, or the LM head with the final norm
    (with tied embeddings one unit holds the embeddings and the head)."""
    return max(_layer_params(shape, settings), shape.embedding_params + shape.hidden_size)


def _shardable_params(shape: ModelShape, settings: TrainingShape) -> int:
    quantized = _linear_params(shape)
    return shape.total_params - (quantized if settings.method == "qlora" else 0)


def _largest_trainable_unit_params(shape: ModelShape, settings: TrainingShape) -> int:
    if settings.method == "full":
        return _largest_unit_params(shape, settings)
    adapters = lora_parameter_count(shape, settings) // max(shape.num_layers, 1)
    return max(adapters, saved_module_parameter_count(shape, settings.modules_to_save))


def launched_strategy(environ: Mapping[str, str]) -> Strategy:
    """The strategy of this process's launch, from the variables ``accelerate launch`` sets (DDP
    under torchrun or without them)."""
    if environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        if stage == "3":
            return "zero3_offload" if environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE") == "cpu" else "zero3"
        return "zero1" if stage == "1" else "zero2"
    if environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        if environ.get("FSDP_OFFLOAD_PARAMS", "").lower() == "true":
            return "fsdp_full_shard_offload"
        # FSDP2 says false; FSDP1's sharding strategy names it.
        if environ.get("FSDP_RESHARD_AFTER_FORWARD", "").lower() in ("false", "shard_grad_op"):
            return "fsdp_shard_grad_op"
        return "fsdp_full_shard"
    return "ddp"


def launched_rank_estimator(environ: Mapping[str, str]) -> tuple[Estimator, str]:
    """The plan of one rank of this process's distributed launch, and its strategy and world size in words."""
    strategy = launched_strategy(environ)
    devices = int(environ.get("WORLD_SIZE", "1"))
    return partial(estimate_rank_peak, strategy=strategy, devices=devices), f"{strategy} over {devices} ranks"


def plan_strategies(
    shape: ModelShape,
    settings: TrainingShape,
    *,
    devices: int,
    device_bytes: int,
    device_name: str,
    auto_fit: bool,
    allow_gradient_checkpointing: bool,
) -> list[RankPlan]:
    """Every strategy's rank plan, cheapest first (``STRATEGIES``); a plan that does not fit is
    auto-fitted (gradient checkpointing, then a smaller micro-batch) when ``auto_fit``."""
    plans = []
    for strategy in STRATEGIES:
        estimate = partial(estimate_rank_peak, strategy=strategy, devices=devices)
        plan = estimate(shape, settings, available_bytes=device_bytes, device_name=device_name)
        fitted = None
        if auto_fit and not plan.fits:
            fitted = fit_to_memory(
                shape,
                settings,
                available_bytes=device_bytes,
                device_name=device_name,
                allow_gradient_checkpointing=allow_gradient_checkpointing,
                estimate=estimate,
            )
        host = offloaded_host_bytes(shape, (fitted or plan).settings, strategy=strategy, devices=devices)
        plans.append(RankPlan(strategy=strategy, devices=devices, plan=plan, fitted=fitted, host_bytes=host))
    return sorted(plans, key=lambda p: (SHARDINGS[p.strategy].cost, p.plan.peak_bytes))


def recommend(plans: list[RankPlan]) -> RankPlan | None:
    """The first strategy in cost order that fits, after auto-fit where the config allows it (the
    changes the run's own memory_plan step would make on that strategy)."""
    return next((plan for plan in plans if plan.fits), None)


# The search for more devices stops here: a run that needs more is not a plan.
MAX_DEVICES = 65536


def fewest_devices_without_offload(
    shape: ModelShape, settings: TrainingShape, *, start: int, device_bytes: int, **fit
) -> RankPlan | None:
    """The recommended plan without offload on the fewest devices (more than ``start``) of
    ``device_bytes``, or None below ``MAX_DEVICES``. ``fit``: plan_strategies' other arguments.

    Only worth asking when no strategy without offload fits on ``start`` devices: offload itself
    never needs more devices, as what it keeps on a device (activations, logits, gathered units)
    does not shrink with their number. A rank's peak without offload never grows with the number of
    devices past one, so the first count that fits is found by bisection."""

    def chosen(count: int) -> RankPlan | None:
        plans = plan_strategies(shape, settings, devices=count, device_bytes=device_bytes, **fit)
        return recommend([plan for plan in plans if not SHARDINGS[plan.strategy].offload])

    if chosen(MAX_DEVICES) is None:
        return None
    low, high = start, MAX_DEVICES  # low does not fit, high does
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if chosen(middle) else (middle, high)
    return chosen(high)
