"""Choose the training precision for the device, and refuse one the device cannot run well."""

from __future__ import annotations

from entity_training import ConfigError, Problem
from plugins.training.device import DeviceInfo

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_precision(requested: str, device: DeviceInfo, *, config_path: str = "precision") -> str:
    """``auto`` -> bf16 where native, else fp16 on GPUs, else fp32; an explicit choice is checked."""
    if requested == "auto":
        if device.supports_bf16:
            return "bf16"
        return "fp16" if device.supports_fp16 else "fp32"
    if requested == "bf16" and not device.supports_bf16:
        alternative = "fp16" if device.supports_fp16 else "fp32"
        raise ConfigError(
            Problem(
                f"precision bf16 was asked for, but {device.name} has no native bf16 support "
                f"(it would be emulated and many times slower). Set `precision: {alternative}` "
                "or `precision: auto` to let the device decide.",
                path=config_path,
            )
        )
    if requested == "fp16" and not device.supports_fp16:
        raise ConfigError(
            Problem(
                f"precision fp16 was asked for, but mixed-precision fp16 training needs a GPU and "
                f"this run uses {device.name}. Set `precision: fp32` or `precision: auto`.",
                path=config_path,
            )
        )
    return requested


def torch_dtype(precision: str):
    """The torch dtype of a resolved precision name (fp32, bf16, fp16)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
