"""Sharded training as ``accelerate launch`` asks for it: the FSDP settings it passes to each
process, FSDP2 on CPU processes, and ``final-model/`` saved from a sharded model (FSDP or
DeepSpeed) by every rank together.

``accelerate launch`` hands a config file's ``fsdp_config`` to every process as environment
variables (``ACCELERATE_USE_FSDP``, ``FSDP_VERSION``, ``FSDP_TRANSFORMER_CLS_TO_WRAP``, ...), which
accelerate's ``FullyShardedDataParallelPlugin`` reads back. Light at import: no torch here.
"""

from __future__ import annotations

import os
from pathlib import Path

TRANSFORMER_WRAP = "TRANSFORMER_BASED_WRAP"


def fsdp_requested() -> bool:
    """True when the launcher asked for FSDP (``distributed_type: FSDP`` in the accelerate config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def fsdp_layer_classes_to_wrap() -> list[str]:
    """The layer classes named in ``fsdp_transformer_layer_cls_to_wrap`` (empty: none named, and
    accelerate then wraps the model's own ``_no_split_modules``)."""
    if not fsdp_requested() or os.environ.get("FSDP_AUTO_WRAP_POLICY", "").upper() != TRANSFORMER_WRAP:
        return []
    names = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    return [name.strip() for name in names.split(",") if name.strip()]


def shard_on_cpu(accelerator) -> None:
    """Make ``accelerator`` shard the model with FSDP on CPU processes (gloo), as the launcher asked.

    accelerate 1.16 keeps FSDP for accelerator devices only: on CPU processes it records the run as
    MULTI_CPU and wraps the model in DDP, so an FSDP config would silently train unsharded. torch's
    FSDP2 runs on CPU with gloo, so the shared state is switched to FSDP, with the plugin built from
    the launcher's settings, before anything is prepared; accelerate then shards, checkpoints and
    gathers the model as it does on GPUs.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    plugin = FullyShardedDataParallelPlugin()
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def save_final_weights(trainer, final_dir: Path) -> None:
    """The adapter or the full weights in ``final_dir`` as ``save_pretrained`` lays them out.

    Every rank calls it: a sharded model's weights are gathered from all of them (FSDP here,
    DeepSpeed ZeRO-3 inside the Trainer's ``save_model``), and the main process writes.
    """
    if not getattr(trainer, "is_fsdp_enabled", False):
        trainer.save_model(str(final_dir))
        return
    gathered = trainer.accelerator.get_state_dict(trainer.model)
    # Gathered, tied weights (the tiny model's embeddings and output layer) arrive as separate
    # copies, which save_pretrained would write twice; keep the first name of each, as it does.
    seen: set[int] = set()
    for name, parameter in trainer.model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            gathered.pop(name, None)
        seen.add(id(parameter))
    trainer._save(str(final_dir), state_dict=gathered)
