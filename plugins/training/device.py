"""What the training device can do: its kind, native low-precision support and free memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import psutil

# CPU flags that give native bf16 matrix maths; without them bf16 autocast is emulated
# (about 14x slower than fp32 on an AVX2-only CPU, measured on this project's runners).
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cuda", "mps" or "cpu"
    name: str
    supports_bf16: bool
    supports_fp16: bool
    total_memory_bytes: int
    free_memory_bytes: int


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return frozenset()
    for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    return any(flag in _cpu_flags() for flag in _CPU_BF16_FLAGS)


def detect_device() -> DeviceInfo:
    """The device training will use: the current CUDA GPU if there is one, else the CPU."""
    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return DeviceInfo(
            kind="cuda",
            name=torch.cuda.get_device_name(index),
            supports_bf16=torch.cuda.is_bf16_supported(including_emulation=False),
            supports_fp16=True,
            total_memory_bytes=int(total),
            free_memory_bytes=int(free),
        )
    memory = psutil.virtual_memory()
    return DeviceInfo(
        kind="cpu",
        name=f"CPU ({psutil.cpu_count(logical=True)} threads)",
        supports_bf16=cpu_supports_bf16(),
        supports_fp16=False,
        total_memory_bytes=int(memory.total),
        free_memory_bytes=int(memory.available),
    )


def distributed_launch() -> bool:
    """True under torchrun / accelerate launch with several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
