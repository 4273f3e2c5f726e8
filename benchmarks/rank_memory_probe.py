"""One rank of the per-rank memory check: trains a few steps under DDP or FSDP2 (full shard) on
CPU processes (gloo) and prints, on rank 0, every rank's measured peak-RSS increase beside the
per-rank plan's estimate (plugins/training/rank_memory_plan.py).

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/rank_memory_probe.py \\
        STRATEGY WORKDIR [METHOD [BATCH [SEQ]]]

STRATEGY is ``ddp`` or ``fsdp_full_shard``, METHOD ``full`` (default) or ``lora``. The model is a
4-layer Llama of hidden size 512, wide enough that the estimated terms, not the allocator's
run-to-run noise, decide the ratio (built once into WORKDIR by rank 0). Prints
``RESULT {"ranks": [{"rank": 0, "estimate": ..., "measured": ...}, ...], ...}``.

The training loop is plain PyTorch (forward with the model's own loss, backward, AdamW, gradients
set to None), not the Trainer: accelerate turns FSDP on only for GPUs (a CPU run under
``distributed_type: FSDP`` trains with DDP), so the probe shards the model itself, the way
accelerate's ``fsdp2_prepare_model`` does: one unit per decoder layer, the input embeddings, the
final norm with the LM head (kept gathered from forward to backward), then the root.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HIDDEN, LAYERS, INTERMEDIATE, VOCAB = 512, 4, 2048, 8192
STEPS = 3


class PeakSampler:
    """The process's peak RSS, sampled every millisecond on a thread, from ``start``."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.001)

    def start(self) -> None:
        self._thread.start()

    def increase(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.baseline


def build_model(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.training import build_tiny_model_dir

    return build_tiny_model_dir(folder, hidden=HIDDEN, layers=LAYERS, intermediate=INTERMEDIATE, vocab=VOCAB)


def shard(model, strategy: str):
    """Wrap ``model`` for ``strategy``: DDP with its defaults, or FSDP2 units as accelerate makes them."""
    import torch

    if strategy == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for module in base.modules():
        if isinstance(module, LlamaDecoderLayer):
            fully_shard(module)
    fully_shard(base.get_input_embeddings())
    fully_shard([base.model.norm, base.get_output_embeddings()], reshard_after_forward=False)
    fully_shard(model)
    return model


def main() -> None:
    strategy, work = sys.argv[1], Path(sys.argv[2])
    method = sys.argv[3] if len(sys.argv) > 3 else "full"
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    seq = int(sys.argv[5]) if len(sys.argv) > 5 else 256
    import peft  # noqa: F401  (imports are part of the baseline, not of the plan)
    import torch
    import torch.distributed as dist

    from benchmarks.memory_probe import probe_config
    from plugins.training.memory_plan import GIB, shape_and_settings
    from plugins.training.model_setup import load_model_for_training
    from plugins.training.rank_memory_plan import estimate_rank_peak

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        build_model(work / "model")
    dist.barrier()
    config = probe_config(str(work / "model"), method, batch, "fp32", STEPS, False)
    shape, settings = shape_and_settings(config, seq, device_kind="cpu", distributed=True)
    plan = estimate_rank_peak(
        shape, settings, strategy=strategy, devices=world, available_bytes=64 * GIB, device_name="cpu"
    )
    torch.manual_seed(rank)
    rows = [torch.randint(10, VOCAB, (batch, seq)) for _ in range(STEPS)]
    sampler = PeakSampler()
    sampler.start()
    model = shard(load_model_for_training(config, gradient_checkpointing=False).model, strategy)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
    for ids in rows:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    measured = sampler.increase()
    ranks: list[dict] = [{}] * world
    dist.all_gather_object(ranks, {"rank": rank, "estimate": plan.peak_bytes, "measured": measured})
    if rank == 0:
        result = {"strategy": strategy, "method": method, "devices": world, "batch": batch, "seq": seq}
        print("RESULT " + json.dumps({**result, "ranks": ranks, "components": plan.components}), flush=True)
    # Both ranks leave together: a rank destroying its group while the other has exited hung once.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
