"""Keep bitsandbytes out of a training process that does not use it.

peft imports bitsandbytes whenever it is installed, and importing bitsandbytes compiles-wraps its
kernels with torch.compile, which imports torch's dynamo and inductor: 3.0 of the 9.6 CPU
seconds of ``import torch, transformers.trainer, peft`` on this project's CPU machine
(benchmarks/RESULTS.md), paid before the first step of every LoRA or full run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_BITSANDBYTES_OPTIMIZERS = ("8bit", "paged", "bnb")


def needs_bitsandbytes(config: dict[str, Any]) -> bool:
    """Whether the resolved training config loads quantized weights or uses a bitsandbytes optimizer."""
    return bool(config.get("load_in_4bit") or config.get("load_in_8bit")) or any(
        word in str(config.get("optim", "")) for word in _BITSANDBYTES_OPTIMIZERS
    )


@contextmanager
def bitsandbytes_hidden(hide: bool) -> Iterator[None]:
    """Within the block, bitsandbytes looks not installed to the libraries imported there; after
    it, it is importable again and peft checks for it afresh (a later QLoRA run in the same
    process finds it). Does nothing when it is already imported."""
    if not hide or "bitsandbytes" in sys.modules:
        yield
        return
    sys.modules["bitsandbytes"] = None  # find_spec() then answers None, import raises ImportError
    try:
        yield
    finally:
        if "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
            del sys.modules["bitsandbytes"]
        _forget_cached_checks()


def _forget_cached_checks() -> None:
    import_utils = sys.modules.get("peft.import_utils")
    for name in ("is_bnb_available", "is_bnb_4bit_available"):
        check = getattr(import_utils, name, None)
        if hasattr(check, "cache_clear"):
            check.cache_clear()
