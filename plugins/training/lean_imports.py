"""Keep bitsandbytes out of a training run that does not quantize.

peft imports bitsandbytes whenever it is installed, and importing bitsandbytes wraps its kernels
with torch.compile, which imports torch's dynamo and inductor. Hiding it while the training
libraries import saves 1.2 CPU seconds and 44 MB of peak RSS before the first step of every LoRA
or full run (the imports of ``FineTuningPlugin._train_once``, 5 fresh processes each, medians:
4.86 -> 3.70 CPU s, 474 -> 430 MB; benchmarks/RESULTS.md, "Lean imports").
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

_BITSANDBYTES_OPTIMIZERS = ("8bit", "paged", "bnb")


def needs_bitsandbytes(*, load_in_4bit: bool, optim: str) -> bool:
    """Whether a training run loads quantized weights or uses a bitsandbytes optimizer."""
    return load_in_4bit or any(word in optim for word in _BITSANDBYTES_OPTIMIZERS)


@contextmanager
def training_imports(*, hide_bitsandbytes: bool) -> Iterator[None]:
    """Import the Trainer's libraries within this block. With ``hide_bitsandbytes`` (and bitsandbytes
    not imported yet) it looks not installed inside the block: find_spec() answers None and import
    raises ImportError. Afterwards it is importable again, and peft checks for it afresh, so a later
    QLoRA run in the same process finds it."""
    hide = hide_bitsandbytes and "bitsandbytes" not in sys.modules
    if hide:
        sys.modules["bitsandbytes"] = None
    try:
        yield
    finally:
        if hide and sys.modules.get("bitsandbytes", ...) is None:
            del sys.modules["bitsandbytes"]
        import_utils = sys.modules.get("peft.import_utils")
        for name in ("is_bnb_available", "is_bnb_4bit_available"):
            check = getattr(import_utils, name, None)
            if hasattr(check, "cache_clear"):  # peft caches the answer given while it was hidden
                check.cache_clear()
