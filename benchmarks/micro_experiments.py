"""Stand-alone experiments behind the proposed training-path changes, each A/B interleaved and
repeated (medians of wall and process CPU seconds, in one process so both sides share the load).

    python benchmarks/micro_experiments.py [--repeats 7]

1. Sample isolation on CPU: sdpa with the 4-D boolean block-diagonal mask over whole packed rows
   (ours now) vs sdpa with is_causal=True on each sample separately (a varlen emulation: same
   result, only the useful causal blocks are computed), forward + backward.
2. AdamW on the parameters of ``small``: the foreach implementation (``adamw_torch``, our
   default) vs the fused CPU kernel (``adamw_torch_fused``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(name: str, variants: dict, repeats: int) -> None:
    for fn in variants.values():
        fn()  # warm-up
    times = {label: [] for label in variants}
    for _ in range(repeats):
        for label, fn in variants.items():
            times[label].append(timed(fn))
    print(name)
    first = None
    for label, values in times.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        first = first or (wall, cpu)
        print(
            f"  {label:52s} wall {1000 * wall:8.1f} ms ({first[0] / wall:.2f}x)  CPU {1000 * cpu:8.1f} ms ({first[1] / cpu:.2f}x)"
        )


def attention_experiment(repeats: int, rows: int = 8, length: int = 512, heads: int = 5, head_dim: int = 64) -> None:
    import torch
    import torch.nn.functional as F

    from plugins.data.packing import block_causal_mask

    torch.manual_seed(0)
    # Alpaca-like packing: samples of 60..400 tokens filling rows of 512.
    lengths_per_row = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(rows):
        sizes, room = [], length
        while room > 60:
            size = min(room, int(torch.randint(60, 400, (1,), generator=generator)))
            sizes.append(size)
            room -= size
        sizes[-1] += room
        lengths_per_row.append(sizes)
    mask = block_causal_mask(lengths_per_row, length)
    q, k, v = (torch.randn(rows, heads, length, head_dim, requires_grad=True) for _ in range(3))

    def masked():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.sum().backward()

    def per_sample():
        outputs = []
        for r, sizes in enumerate(lengths_per_row):
            start = 0
            for size in sizes:
                s = slice(start, start + size)
                outputs.append(
                    F.scaled_dot_product_attention(
                        q[r : r + 1, :, s], k[r : r + 1, :, s], v[r : r + 1, :, s], is_causal=True
                    )
                )
                start += size
        torch.cat([o.reshape(heads, -1) for o in outputs], dim=1).sum().backward()

    with torch.no_grad():
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        sizes = lengths_per_row[0]
        alone = F.scaled_dot_product_attention(
            q[:1, :, : sizes[0]], k[:1, :, : sizes[0]], v[:1, :, : sizes[0]], is_causal=True
        )
        difference = float((reference[:1, :, : sizes[0]] - alone).abs().max())
    samples = sum(len(s) for s in lengths_per_row)
    compare(
        f"attention fwd+bwd, {rows} rows x {length} tokens, {samples} samples, {heads} heads x {head_dim} "
        f"(max |masked - per-sample| = {difference:.1e})",
        {"sdpa + 4-D bool block mask (ours now)": masked, "sdpa is_causal per sample (varlen emulation)": per_sample},
        repeats,
    )


def optimizer_experiment(repeats: int) -> None:
    import torch

    from plugins.models import load_model_config
    from plugins.training.model_shape import model_shape

    total = model_shape(load_model_config("small")).total_params
    torch.manual_seed(0)
    shapes = [(total // 64, 64)]

    def make(fused: bool):
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused, foreach=None if fused else True)
        return optimizer.step

    compare(
        f"AdamW step over {total:,} parameters (full fine-tuning of small)",
        {"foreach (adamw_torch, our default)": make(False), "fused (adamw_torch_fused)": make(True)},
        repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    attention_experiment(args.repeats)
    optimizer_experiment(args.repeats)


if __name__ == "__main__":
    main()
