"""What ``entity-train plan CONFIG --devices N --device-memory SIZE`` prints: every strategy's
per-rank peak (plugins/training/rank_memory_plan.py), which fit, the cheapest that fits and its
components; and, when none fits, the smallest setup that would, as a ConfigError (exit 2)."""

from __future__ import annotations

import math
import re

from plugins.training.memory_plan import HEADROOM, format_bytes, render_plan
from plugins.training.rank_memory_plan import (
    SHARDINGS,
    RankPlan,
    fewest_devices_without_offload,
    plan_strategies,
    recommend,
)

_UNITS = {"": None, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes of a size such as ``80GiB``, ``80GB``, ``24G`` or ``512MiB``: KiB, MiB, GiB, TiB and the
    bare K, M, G, T are powers of 1024; KB, MB, GB, TB powers of 1000. Raises ValueError."""
    match = _SIZE.match(text)
    if not match or not (match.group(2) or match.group(4)) or (match.group(3) and not match.group(2)):
        raise ValueError(f"{text!r} is not a size: write a number and a unit, e.g. 80GiB, 80GB, 24G or 512MiB")
    number, prefix, binary, byte = match.groups()
    if not prefix:
        scale = 1
    elif byte and not binary:
        scale = 1000 ** ("kmgt".index(prefix.lower()) + 1)
    else:
        scale = _UNITS[prefix.lower()]
    size = int(float(number) * scale)
    if size <= 0:
        raise ValueError(f"{text!r} is not a size a device can have: give more than 0 bytes, e.g. 80GiB")
    return size


def this_device(workflow, *, log) -> tuple[int, str]:
    """The memory and kind of a device when --device-memory is not given: this machine's, with the
    memory the single-device plan uses (``memory_budget_gb``, else the device's free memory)."""
    from plugins.training.device import detect_device
    from plugins.training.memory_plan import GIB, workflow_training

    budget = workflow_training(workflow, log=log)[0].memory_budget_gb
    device = detect_device()
    return (int(budget * GIB) if budget else device.free_memory_bytes), device.kind


def print_rank_plans(workflow, *, devices: int, device_bytes: int, device_kind: str, console) -> RankPlan:
    """Plan every strategy for ``devices`` devices of ``device_bytes``, print the table and the
    recommended strategy's components, and return it. Raises ConfigError when none fits."""
    from plugins.training.memory_plan import allows_gradient_checkpointing, shape_and_settings, workflow_training

    config, max_seq_length, preference = workflow_training(workflow, log=console.print)
    shape, settings = shape_and_settings(
        config, max_seq_length, preference=preference, device_kind=device_kind, distributed=True
    )
    if _requested_precision(workflow) == "auto" and device_kind == "cuda" and settings.precision != "bf16":
        console.print(
            f"note: precision auto resolves to {settings.precision} here; planned as bf16, what it resolves to on "
            "a GPU with native bf16 (set training_config.precision to plan another)"
        )
        settings = settings.model_copy(update={"precision": "bf16"})
    fit = {
        "device_name": f"{format_bytes(device_bytes)} {device_kind}",
        "auto_fit": config.auto_fit,
        "allow_gradient_checkpointing": allows_gradient_checkpointing(config),
    }
    plans = plan_strategies(shape, settings, devices=devices, device_bytes=device_bytes, **fit)
    chosen = recommend(plans)
    render_rank_plans(plans, chosen, console)
    if chosen is None:
        raise _nothing_fits(plans, devices=devices, device_bytes=device_bytes, auto_fit=config.auto_fit)
    launch = SHARDINGS[chosen.strategy].launch
    console.print(
        f"recommended: [bold]{chosen.strategy}[/bold], the cheapest that fits: accelerate launch {launch} "
        f"--num_processes {devices} train.py --config {workflow.path or 'CONFIG'}",
        soft_wrap=True,
    )
    render_plan(chosen.best, console)
    if chosen.host_bytes:
        console.print(
            f"  host memory: {format_bytes(chosen.host_bytes)} per rank for the offloaded shards, "
            f"{format_bytes(chosen.host_bytes * devices)} for all {devices} ranks"
        )
        more = fewest_devices_without_offload(shape, settings, start=devices, device_bytes=device_bytes, **fit)
        if more is not None:
            console.print(
                f"  without offload: {more.strategy} fits on {_devices(more.devices)} of {format_bytes(device_bytes)}"
            )
    return chosen


def render_rank_plans(plans: list[RankPlan], chosen: RankPlan | None, console) -> None:
    from rich.table import Table

    first = plans[0]
    usable = format_bytes(first.plan.available_bytes * HEADROOM)
    table = Table(
        title=f"Memory per rank: {first.devices} x {first.plan.device_name} ({usable} usable), cheapest first",
        caption="auto-fit: batch x accumulation, +ckpt: gradient checkpointing on",
    )
    table.add_column("strategy", no_wrap=True, min_width=23)
    table.add_column("peak per rank", justify="right")
    table.add_column("with auto-fit", justify="right")
    table.add_column("host per rank", justify="right")
    table.add_column("verdict", no_wrap=True, min_width=11)
    for plan in plans:
        fitted = "-"
        if plan.fitted is not None:
            settings = plan.fitted.settings
            checkpointing = " +ckpt" if settings.gradient_checkpointing else ""
            fitted = (
                f"{format_bytes(plan.fitted.peak_bytes)} ({settings.batch_size}x"
                f"{settings.gradient_accumulation_steps}{checkpointing})"
            )
        if plan is chosen:
            verdict = "[bold green]recommended[/bold green]"
        elif plan.plan.fits:
            verdict = "[green]fits[/green]"
        elif plan.fits:
            verdict = "[yellow]fits, auto-fit[/yellow]"
        else:
            verdict = "[red]does not fit[/red]"
        host = format_bytes(plan.host_bytes) if SHARDINGS[plan.strategy].offload else "-"
        table.add_row(plan.strategy, format_bytes(plan.plan.peak_bytes), fitted, host, verdict)
    console.print(table)


def _requested_precision(workflow) -> str | None:
    from plugins.training_config import TrainingConfigPlugin

    step = next((step for step in workflow.steps if isinstance(step.plugin, TrainingConfigPlugin)), None)
    return step.plugin.config.precision if step else None


def _nothing_fits(plans: list[RankPlan], *, devices: int, device_bytes: int, auto_fit: bool):
    """The ConfigError of a setup too small for every strategy: the memory per device that would do.
    More devices would not: what offload keeps on a device does not shrink with their number."""
    from entity_training import ConfigError, Problem

    leanest = min(plans, key=lambda plan: plan.best.peak_bytes)
    # The memory that makes the leanest plan fit, rounded up to a tenth of a GiB.
    needed = math.ceil(leanest.best.peak_bytes / HEADROOM / 1024**3 * 10) / 10
    levers = "with full sharding and offload" + (", gradient checkpointing and a micro-batch of 1" if auto_fit else "")
    off = " (auto_fit is off: the batch and checkpointing were kept as configured)" if not auto_fit else ""
    message = (
        f"--devices {devices} --device-memory {format_bytes(device_bytes)}: the training does not fit, even {levers}"
        f"{off}: a rank needs at least {format_bytes(leanest.best.peak_bytes)} ({leanest.strategy}), and "
        f"{format_bytes(device_bytes * HEADROOM)} of each device is usable. The smallest setup that would fit: "
        f"{_devices(devices)} of at least {needed:.1f} GiB ({leanest.strategy}); more devices of "
        f"{format_bytes(device_bytes)} would not, as the activations, logits and gathered units a rank keeps do not "
        "shrink with their number. Or make the job smaller: a shorter max_seq_length, LoRA or QLoRA, a smaller model."
    )
    return ConfigError(Problem(message))


def _devices(count: int) -> str:
    return "1 device" if count == 1 else f"{count} devices"
