"""Where one training step of ours goes (torch.profiler), and A/B experiments on that step.

    python benchmarks/profile_step.py [--model small] [--method lora] [--length 512] [--batch 8] [--repeats 5]

The step is ours without the Trainer: the model as load_model_for_training prepares it, a batch
from PackedCollator (full packed rows, two samples each), forward, backward, AdamW step.
Experiments, interleaved and repeated (medians, in-process so they share the machine's load):
  mask   - 4-D boolean block-diagonal mask (ours) vs no mask (causal only: the cost of the mask)
  loss   - the model's own loss vs our chunked cross-entropy over the last hidden states
  threads- torch threads: every core vs one
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small")
    parser.add_argument("--method", default="lora", choices=("lora", "full"))
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-profile", action="store_true")
    return parser.parse_args()


def build(args):
    import torch

    from plugins.data.collator import PackedCollator
    from plugins.training.model_setup import load_model_for_training
    from plugins.training_config import TrainingConfigPlugin

    config = TrainingConfigPlugin(
        {"model_name_or_path": args.model, "training_method": args.method, "lora_dropout": 0.0}
    ).resolve(seed=0, log=lambda message: None)
    loaded = load_model_for_training(config, gradient_checkpointing=False)
    model = loaded.model.train()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    half = args.length // 2
    rows = []
    for _ in range(args.batch):
        ids = torch.randint(10, vocab, (args.length,), generator=generator).tolist()
        rows.append(
            {
                "input_ids": ids,
                "labels": ids,
                "position_ids": list(range(half)) + list(range(args.length - half)),
                "seq_lengths": [half, args.length - half],
            }
        )
    batch = PackedCollator(pad_token_id=loaded.tokenizer.pad_token_id)(rows)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, batch, optimizer


def step(model, batch, optimizer, *, loss_fn=None):
    if loss_fn is None:
        loss = model(**batch).loss
    else:
        loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)


def chunked_loss(model, batch):
    """Our chunked cross-entropy (plugins/training/chunked_loss.py), whatever the vocabulary size."""
    from plugins.training.chunked_loss import chunk_tokens, chunked_causal_lm_loss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = base.get_decoder()(**inputs).last_hidden_state
    tokens = chunk_tokens(base.config.vocab_size)
    return chunked_causal_lm_loss(hidden, base.get_output_embeddings(), batch["labels"], None, tokens)


def timed(fn) -> tuple[float, float]:
    """Wall seconds and process CPU seconds (every thread): the CPU time is robust to other load."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    import torch

    args = parse_args()
    torch.manual_seed(0)
    model, batch, optimizer = build(args)
    tokens = int(batch["input_ids"].numel())
    step(model, batch, optimizer)  # warm-up
    if not args.no_profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(model, batch, optimizer)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    no_mask = {k: v for k, v in batch.items() if k != "attention_mask"}
    threads = torch.get_num_threads()
    variants = {
        "ours (bool block mask, model loss)": lambda: step(model, batch, optimizer),
        "no mask (causal only)": lambda: step(model, no_mask, optimizer),
        "chunked cross-entropy": lambda: step(model, batch, optimizer, loss_fn=chunked_loss),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    times["1 thread"] = []
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))
        torch.set_num_threads(1)
        times["1 thread"].append(timed(lambda: step(model, batch, optimizer)))
        torch.set_num_threads(threads)
    base = statistics.median(cpu for _, cpu in times["ours (bool block mask, model loss)"])
    print(f"{args.method} {args.model}, {args.batch} x {args.length} tokens, medians of {args.repeats} (interleaved):")
    for name, values in times.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(
            f"  {name:36s} wall {wall:7.3f} s/step ({tokens / wall:6.0f} tok/s)  CPU {cpu:7.3f} s/step "
            f"(ours/this {base / cpu:.2f})"
        )


if __name__ == "__main__":
    main()
