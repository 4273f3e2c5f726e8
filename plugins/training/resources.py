"""Memory measurement and release, for CPU and GPU alike."""

from __future__ import annotations

import gc
import resource
import sys

import psutil


def current_memory_bytes() -> int:
    """Memory in use now: allocated GPU memory when training on CUDA, else the process RSS."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.memory_allocated())
    return int(psutil.Process().memory_info().rss)


def peak_memory_bytes() -> int:
    """The peak so far: the CUDA allocator's peak, or the process's peak RSS."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def release_memory() -> None:
    """Collect garbage and return cached GPU blocks to the driver."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
