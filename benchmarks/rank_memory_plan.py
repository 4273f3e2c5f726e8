"""The per-rank memory plan against each rank's measured peak RSS, for DDP and FSDP2 (full shard)
on 2 CPU processes (gloo, torchrun), each run a fresh launch of benchmarks/rank_memory_probe.py.

    python benchmarks/rank_memory_plan.py [--methods full,lora] [--processes 2] [--no-write]

Every strategy runs twice: with glibc's default allocator (what a user's RSS shows) and with its
mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``), under which every tensor over the
threshold is mapped on allocation and given back when freed, so RSS follows the live tensors.
By default glibc raises the threshold to the largest block freed so far (up to 32 MiB), after which
blocks of that size come from its heap and stay resident when freed: FSDP2 all-gathers and frees
every unit at every step, so its RSS keeps more than its live memory. The plan's single-process
terms were calibrated on the default allocator (benchmarks/memory_plan.py). Writes its section of
RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PYTHON, REPO, load_average, markdown_table, require_ok, run_child, write_section  # noqa: E402
from benchmarks.memory_plan import components_and_machine  # noqa: E402

PROBE = str(REPO / "benchmarks" / "rank_memory_probe.py")
STRATEGIES = ("ddp", "fsdp_full_shard")
# glibc's mmap threshold fixed at its initial value: RSS follows the live tensors.
LIVE_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "131072"}
MIB = 2**20
READING = (
    "Reading: with the live allocator the plan's per-rank terms (what sharding divides, the gathered units) "
    "account for the measured saving; every estimate is then above the live peak by what its single-process "
    "terms add for glibc's heap (they were calibrated on the default allocator). With the default allocator "
    "DDP's ranks are where the single-process plan puts them, while FSDP2's keep its freed all-gather "
    "buffers resident: on CPU its RSS is above the estimate, and for LoRA (whose sharding saves little) "
    "above DDP's. On a GPU, PyTorch's caching allocator keeps such blocks for the next unit of the same size "
    "(not measured here: no GPU was lent)."
)


def run_probe(strategy: str, work: Path, *, method: str = "full", processes: int = 2, live: bool = False) -> dict:
    """One torchrun launch of the probe: its RESULT (every rank's estimate and measured peak)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **(LIVE_ALLOCATOR if live else {}))
    command = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), PROBE]
    child = run_child([*command, strategy, str(work), method], env=env)
    require_ok(child, f"the rank memory probe ({strategy}, {method})")
    line = next(line for line in child.output.splitlines() if line.startswith("RESULT "))
    return {**json.loads(line.removeprefix("RESULT ")), "wall_seconds": child.wall_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="full", help="comma-separated training methods (full,lora)")
    parser.add_argument("--processes", type=int, default=2, help="ranks (CPU processes)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    load_start = load_average()
    print(f"load average at start: {load_start}")
    work = Path(tempfile.mkdtemp(prefix="rank-memory-bench-"))
    rows, details, results = [], [], {}
    for method in args.methods.split(","):
        for live in (False, True):
            for strategy in STRATEGIES:
                result = run_probe(strategy, work, method=method, processes=args.processes, live=live)
                results[(method, live, strategy)] = result
                allocator = "fixed mmap threshold" if live else "default"
                for rank in result["ranks"]:
                    error = rank["estimate"] / rank["measured"] - 1
                    rows.append(
                        [method, strategy, allocator, rank["rank"], f"{rank['estimate'] / MIB:.0f}",
                         f"{rank['measured'] / MIB:.0f}", f"{100 * error:+.0f}%", load_average().split()[0]]
                    )  # fmt: skip
                    print(" | ".join(str(cell) for cell in rows[-1]) + f" ({result['wall_seconds']:.0f} s)", flush=True)
                if not live:
                    parts = ", ".join(f"{k} {v / MIB:.0f}" for k, v in result["components"].items() if v)
                    details.append(f"- {method}, {strategy}: {parts} MiB")
    savings = []
    for method in args.methods.split(","):
        for live in (False, True):
            ddp, fsdp = results[(method, live, "ddp")], results[(method, live, "fsdp_full_shard")]
            estimated = ddp["ranks"][0]["estimate"] - fsdp["ranks"][0]["estimate"]
            measured = [a["measured"] - b["measured"] for a, b in zip(ddp["ranks"], fsdp["ranks"], strict=True)]
            allocator = "fixed mmap threshold" if live else "default"
            savings.append([method, allocator, f"{estimated / MIB:.0f}", ", ".join(f"{m / MIB:.0f}" for m in measured)])
    load_end = load_average()
    first = next(iter(results.values()))
    report = "\n".join(
        [
            "## Per-rank memory plan vs measured peak, DDP and FSDP2 on CPU (benchmarks/rank_memory_plan.py)",
            "",
            f"{first['devices']} CPU processes (gloo, torchrun), a 4-layer Llama of hidden size 512 (MLP 2048, "
            f"vocabulary 8192, 24M parameters), fp32, micro-batch {first['batch']} x {first['seq']} tokens per rank, "
            "3 optimizer steps of a plain loop (benchmarks/rank_memory_probe.py: the Trainer cannot shard on CPU), "
            "each run a fresh launch. Measured = each rank's peak RSS increase over the process just before the "
            "model loads. Allocator: glibc's default, or its mmap threshold fixed at 128 KiB so that RSS follows "
            "the live tensors (see the script's docstring).",
            "",
            markdown_table(
                ["method", "strategy", "allocator", "rank", "estimate MiB", "measured MiB", "error", "1-min load"],
                rows,
            ),
            "",
            "What sharding saves per rank, DDP minus FSDP2 full shard (MiB):",
            "",
            markdown_table(["method", "allocator", "estimated", "measured (rank 0, rank 1)"], savings),
            "",
            READING,
            *components_and_machine(details, load_start, load_end),
        ]
    )
    print(report)
    if not args.no_write:
        write_section("rank_memory_plan", report)


if __name__ == "__main__":
    main()
