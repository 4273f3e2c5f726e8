"""One training run of the memory-plan benchmark, in its own process: the plan's prediction and
the measured peak-RSS increase (or CUDA peak allocation) over the process before the model loads.

    python benchmarks/memory_probe.py MODEL METHOD SEQ BATCH WORKDIR [PRECISION [STEPS [CHECKPOINTING]]]

PRECISION is training_config's (auto by default: bf16 on a CPU with native bf16), STEPS the
optimizer steps (3; the peak comes with the first, when the optimizer states appear), CHECKPOINTING
``on`` or ``off`` (default off). Prints ``RESULT {"estimate": ..., "measured": ...}``. The rows are
full: BATCH packed rows of SEQ tokens (two samples each), what the plan assumes.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = 3


def synthetic_split(folder: Path, rows: int, length: int, vocab: int) -> str:
    import numpy as np

    from plugins.data.tokenized import write_split

    rng = np.random.default_rng(0)
    half = length // 2
    samples = [
        rng.integers(10, vocab, size=size, dtype=np.int32) for _ in range(rows) for size in (half, length - half)
    ]
    grouping = [[2 * i, 2 * i + 1] for i in range(rows)]
    write_split(folder, grouping, samples, [s.copy() for s in samples])
    return str(folder)


def probe_config(model: str, method: str, batch: int, precision: str, steps: int, checkpointing: bool) -> dict:
    """The resolved training config a probe trains with (memory_plan.py plans kept results with it)."""
    from plugins.training_config import TrainingConfigPlugin

    return TrainingConfigPlugin(
        {
            "model_name_or_path": model,
            "training_method": method,
            "batch_size": batch,
            "max_steps": steps,
            "save_steps": None,
            "gradient_checkpointing": checkpointing,
            "precision": precision,
            "auto_fit": False,
            "lora_dropout": 0.0,
        }
    ).resolve(seed=0, log=lambda message: None)


def main() -> None:
    model, method, seq, batch, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    precision = sys.argv[6] if len(sys.argv) > 6 else "auto"
    steps = int(sys.argv[7]) if len(sys.argv) > 7 else STEPS
    checkpointing = len(sys.argv) > 8 and sys.argv[8] == "on"
    import peft  # noqa: F401  (imports are part of the baseline, not of the plan)
    import psutil
    import torch

    if method == "qlora":
        import bitsandbytes  # noqa: F401
    from plugins.data.collator import PackedCollator
    from plugins.models import load_model_config
    from plugins.training.callbacks import TokenCounter
    from plugins.training.memory_plan import plan_for_config
    from plugins.training.model_setup import load_model_for_training
    from plugins.training.trainer import PackedRows, PackedTrainer, training_arguments

    config = probe_config(model, method, batch, precision, steps, checkpointing)
    plan = plan_for_config(config, seq)
    vocab = load_model_config(model).vocab_size
    data = synthetic_split(work / "train", batch * steps, seq, vocab)
    torch.manual_seed(0)
    on_cuda = torch.cuda.is_available()
    process, peak, stop = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    baseline = torch.cuda.memory_allocated() if on_cuda else process.memory_info().rss
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    loaded = load_model_for_training(config, gradient_checkpointing=checkpointing)
    args = training_arguments(
        config,
        checkpoint_dir=work / "checkpoints",
        has_validation=False,
        batch_size=batch,
        gradient_accumulation_steps=1,
        gradient_checkpointing=checkpointing,
    )
    PackedTrainer(
        model=loaded.model,
        args=args,
        train_dataset=PackedRows(data),
        data_collator=PackedCollator(pad_token_id=loaded.tokenizer.pad_token_id),
        tokens=TokenCounter(),
        checkpoint_dir=work / "checkpoints",
        save_total_limit=1,
    ).train()
    stop.set()
    sampler.join()
    if on_cuda:
        measured = torch.cuda.max_memory_allocated() - baseline
    else:
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        measured = max(maxrss_after if maxrss_after > maxrss_before else 0, peak[0]) - baseline
    result = {
        "estimate": plan.peak_bytes,
        "measured": measured,
        "baseline": baseline,
        "components": plan.components,
        "precision": config.precision,
        "steps": steps,
        "gradient_checkpointing": checkpointing,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
