"""The memory plan's prediction against the measured peak, for full, LoRA and QLoRA at two
sequence lengths and two batch sizes, each in a fresh process (benchmarks/memory_probe.py).

    python benchmarks/memory_plan.py [--model small] [--lengths 256,512] [--batches 2,4] [--quick]

Measured: peak RSS increase over the process just before the model loads (CPU), or
``torch.cuda.max_memory_allocated`` (GPU). Target: every prediction within 15%.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    PYTHON,
    REPO,
    load_average,
    machine_info,
    machine_lines,
    markdown_table,
    require_ok,
    run_child,
    write_section,
)

PROBE = str(REPO / "benchmarks" / "memory_probe.py")
TARGET = 0.15


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small", help="built-in model or model folder")
    parser.add_argument("--methods", default="full,lora,qlora", help="comma-separated training methods")
    parser.add_argument("--lengths", default="256,512", help="comma-separated sequence lengths")
    parser.add_argument("--batches", default="2,4", help="comma-separated micro-batch sizes")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, LoRA, length 64, batch 2")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    return parser.parse_args()


def measure(model: str, method: str, length: int, batch: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="memory-plan-bench-"))
    child = run_child([PYTHON, PROBE, model, method, str(length), str(batch), str(work)])
    require_ok(child, f"the memory probe ({method}, length {length}, batch {batch})")
    line = next(line for line in child.output.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    args = parse_args()
    if args.quick:
        args.model, args.methods, args.lengths, args.batches, args.no_write = "tiny", "lora", "64", "2", True
    load_start = load_average()
    print(f"load average at start: {load_start}")
    rows, worst = [], 0.0
    for method in args.methods.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            for batch in (int(x) for x in args.batches.split(",")):
                figures = measure(args.model, method, length, batch)
                error = figures["estimate"] / figures["measured"] - 1
                worst = max(worst, abs(error))
                rows.append(
                    [
                        method,
                        length,
                        batch,
                        f"{figures['estimate'] / 2**20:.0f}",
                        f"{figures['measured'] / 2**20:.0f}",
                        f"{100 * error:+.0f}%",
                        "yes" if abs(error) <= TARGET else "**no**",
                    ]
                )
                print(" | ".join(str(cell) for cell in rows[-1]), flush=True)
    load_end = load_average()
    print(f"load average at end: {load_end}")
    report = "\n".join(
        [
            "## Memory plan vs measured peak (benchmarks/memory_plan.py)",
            "",
            f"Model `{args.model}`, fp32 on CPU, full packed rows, no gradient checkpointing, LoRA r16 all-linear "
            "without dropout, 3 steps, each configuration a fresh process. Measured = peak RSS increase over the "
            "process just before the model loads (after the imports).",
            "",
            markdown_table(["method", "length", "batch", "predicted MiB", "measured MiB", "error", "within 15%"], rows),
            "",
            f"Worst error: {100 * worst:.0f}% (target 15%).",
            "",
            "### Machine",
            "",
            machine_lines(machine_info(), load_start, load_end),
        ]
    )
    print(report)
    if not args.no_write:
        write_section("memory_plan", report)


if __name__ == "__main__":
    main()
