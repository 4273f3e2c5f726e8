"""Keep libraries that a training run does not use out of its process start.

- bitsandbytes: peft imports it whenever it is installed, and importing bitsandbytes wraps its
  kernels with torch.compile, which imports torch's dynamo and inductor: 3.0 of the 9.6 CPU
  seconds of ``import torch, transformers.trainer, peft`` on this project's CPU machine
  (benchmarks/RESULTS.md), paid before the first step of every LoRA or full run.
- datasets: ``transformers.trainer`` imports it only to recognise ``datasets.Dataset`` objects
  (0.45 of the ~5 s to the first step of a warm LoRA run of ``small``). Our rows are a torch
  Dataset, and no object can be an instance of a class whose module was never imported, so the
  Trainer gets a stand-in that answers those checks and imports the real library for anything else.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_BITSANDBYTES_OPTIMIZERS = ("8bit", "paged", "bnb")
# The classes transformers.trainer tests objects against; anything else imports datasets itself.
_DATASETS_CLASSES = ("Dataset", "IterableDataset", "DatasetDict", "IterableDatasetDict")


def needs_bitsandbytes(*, load_in_4bit: bool, optim: str) -> bool:
    """Whether a training run loads quantized weights or uses a bitsandbytes optimizer."""
    return load_in_4bit or any(word in optim for word in _BITSANDBYTES_OPTIMIZERS)


@contextmanager
def training_imports(*, hide_bitsandbytes: bool) -> Iterator[None]:
    """Import the Trainer's libraries within this block: bitsandbytes (when ``hide_bitsandbytes``)
    and datasets look not installed to them. After it both are importable again: peft checks for
    bitsandbytes afresh (a later QLoRA run in the same process finds it), and the Trainer's
    ``datasets`` is a stand-in that defers to the real library once anything imports it."""
    hidden = [name for name, hide in (("bitsandbytes", hide_bitsandbytes), ("datasets", True)) if hide]
    if "transformers.trainer" in sys.modules:  # imported with datasets already: nothing to defer there
        hidden.remove("datasets")
    with _hidden(hidden):
        yield
    trainer = sys.modules.get("transformers.trainer")
    if trainer is not None and not hasattr(trainer, "datasets"):
        trainer.datasets = _DeferredDatasets("datasets")


@contextmanager
def _hidden(names: list[str]) -> Iterator[None]:
    """Within the block, ``names`` that are not imported yet look not installed: find_spec()
    answers None and import raises ImportError. Afterwards they are importable again."""
    names = [name for name in names if name not in sys.modules]
    for name in names:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in names:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
        _forget_cached_checks()


class _NeverImported:
    """Stands for a datasets class while datasets is not imported: nothing is an instance of it."""


class _DeferredDatasets(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if sys.modules.get("datasets") is None and name in _DATASETS_CLASSES:
            return _NeverImported
        import datasets

        return getattr(datasets, name)


def _forget_cached_checks() -> None:
    import_utils = sys.modules.get("peft.import_utils")
    for name in ("is_bnb_available", "is_bnb_4bit_available"):
        check = getattr(import_utils, name, None)
        if hasattr(check, "cache_clear"):
            check.cache_clear()
