"""Streaming keeps memory flat in the dataset's size: the same run on a >= 2 GB file and on 1% of it.

    python benchmarks/streaming_memory.py [--gigabytes 2.0] [--steps 40] [--rounds 1] [--no-write]

Writes seeded ShareGPT multi-turn rows (``benchmarks.common.sharegpt_rows``) into a JSON Lines
file of at least ``--gigabytes`` in a temporary folder, and a second file holding its first 1% of
rows. The same workflow (``dataset_loader`` with ``streaming: true``, the tiny model, LoRA,
packing to 512 tokens, a shuffle buffer of 1,000 samples, a checkpoint with its stream state every
10 steps) trains ``--steps`` steps on each, each in a fresh process; the peak RSS of each process
(wait4) is compared: the growth is big file minus 1% file (target: under 300 MB). For contrast,
the non-streaming loader runs the same job on the 1% file (it reads and tokenizes every row
first). The temporary folder, 2 GB file included, is removed at the end.

The figures go into benchmarks/RESULTS.md (section ``streaming_memory``) unless --no-write, with the
machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from benchmarks.common import (  # noqa: E402
    PYTHON,
    REPO,
    load_average,
    machine_info,
    machine_lines,
    markdown_table,
    require_ok,
    run_child,
    sharegpt_rows,
    write_section,
)

MAX_SEQ_LENGTH = 512


def write_rows(path: Path, *, min_bytes: int, seed: int = 0) -> int:
    """Write rows until the file holds at least ``min_bytes``; returns the number of rows."""
    count = size = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in sharegpt_rows(seed):
            line = json.dumps(row) + "\n"
            handle.write(line)
            size += len(line)  # the words are ASCII: characters are bytes
            count += 1
            if size >= min_bytes:
                return count
    raise AssertionError("unreachable: the rows never end")


def copy_head(source: Path, target: Path, rows: int) -> None:
    with open(source, encoding="utf-8") as reader, open(target, "w", encoding="utf-8") as writer:
        for _ in range(rows):
            writer.write(reader.readline())


def workflow(folder: Path, data: Path, *, steps: int, streaming: bool) -> Path:
    loader = {"dataset_path": str(data), "validation_split": 0.0}
    if streaming:
        loader = {"dataset_path": str(data), "streaming": True, "shuffle_buffer": 1000, "validation_rows": 20}
    document = {
        "run": {"name": "streaming-memory", "output_dir": str(folder / "run"), "seed": 1},
        "workflow": {
            "INPUT": [{"plugin": "dataset_loader", "config": loader}],
            "PARSE": [
                {
                    "plugin": "training_config",
                    "config": {
                        "model_name_or_path": "tiny",
                        "training_method": "lora",
                        "max_steps": steps,
                        "batch_size": 4,
                        "save_steps": 10,
                        "logging_steps": 10,
                    },
                }
            ],
            "THINK": [
                # This run's own tokenized cache: a warm shared one would hide the non-streaming run's work.
                {
                    "plugin": "data_preparation",
                    "config": {"max_seq_length": MAX_SEQ_LENGTH, "cache_dir": str(folder / "cache")},
                },
                {"plugin": "memory_plan"},
            ],
            # Two threads in every run: torch_threads: auto would give each run what other work leaves it.
            "DO": [{"plugin": "fine_tuning", "config": {"torch_threads": 2}}],
        },
    }
    path = folder / "wf.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def measure(work: Path, name: str, data: Path, *, steps: int, streaming: bool) -> dict:
    folder = work / name
    folder.mkdir()
    run = run_child([PYTHON, str(REPO / "train.py"), "--config", str(workflow(folder, data, steps=steps, streaming=streaming)), "--yes"],
                    env={"OMP_NUM_THREADS": "1", "COLUMNS": "200"})  # fmt: skip
    require_ok(run, name)
    result = json.loads((folder / "run" / "memory.json").read_text(encoding="utf-8"))["entries"]["training.result"]
    stages = json.loads((folder / "run" / "run.json").read_text(encoding="utf-8"))["stages"]
    seconds = {stage["plugin"]: stage["seconds"] for stage in stages}
    shutil.rmtree(folder)
    return {
        "peak": run.peak_rss_bytes,
        "wall": run.wall_seconds,
        "input": seconds["dataset_loader"],
        "training": seconds["fine_tuning"],
        "steps": result["steps"],
        "loss": result["train_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="size of the big file (GiB = 2**30 bytes)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of every run")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of the two streaming runs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    info, load_start = machine_info(), load_average()
    work = Path(tempfile.mkdtemp(prefix="streaming-memory-"))
    try:
        big, small = work / "big.jsonl", work / "small.jsonl"
        started = time.perf_counter()
        rows = write_rows(big, min_bytes=int(args.gigabytes * 2**30))
        copy_head(big, small, rows // 100)
        os.sync()  # the kernel writes the new files out now, not during the first measured run
        print(f"wrote {big.stat().st_size / 2**30:.2f} GiB ({rows:,} rows) in {time.perf_counter() - started:.0f} s; "
              f"1%: {small.stat().st_size / 2**20:.1f} MiB ({rows // 100:,} rows)")  # fmt: skip
        runs: dict[str, list[dict]] = {"big": [], "small": []}
        for round_number in range(args.rounds):
            for name, data in (("big", big), ("small", small)):
                runs[name].append(measure(work, f"{name}-{round_number}", data, steps=args.steps, streaming=True))
                print(name, runs[name][-1])
        loaded = measure(work, "small-loaded", small, steps=args.steps, streaming=False)
        print("small, not streamed", loaded)
        sizes = {"big": big.stat().st_size, "small": small.stat().st_size}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = _report(args, info, load_start, load_average(), rows, sizes, runs, loaded)
    print(report)
    if not args.no_write:
        write_section("streaming_memory", report)


def _report(args, info, load_start, load_end, rows, sizes, runs, loaded) -> str:
    peak = {name: max(run["peak"] for run in measured) for name, measured in runs.items()}
    growth = (peak["big"] - peak["small"]) / 2**20
    table = markdown_table(
        ["run", "file", "peak RSS (MiB, max of rounds)", "process s", "INPUT s", "DO s", "steps", "final train loss"],
        [
            [
                f"streaming, {label}",
                f"{sizes[name] / 2**20:,.0f} MiB",
                f"{peak[name] / 2**20:.0f}",
                ", ".join(f"{run['wall']:.0f}" for run in runs[name]),
                ", ".join(f"{run['input']:.2f}" for run in runs[name]),
                ", ".join(f"{run['training']:.0f}" for run in runs[name]),
                runs[name][0]["steps"],
                f"{runs[name][0]['loss']:.4f}",
            ]
            for name, label in (("big", f"{rows:,} rows"), ("small", f"the first 1% ({rows // 100:,} rows)"))
        ]
        + [
            [
                "not streamed (loaded and tokenized first), the 1% file",
                f"{sizes['small'] / 2**20:,.0f} MiB",
                f"{loaded['peak'] / 2**20:.0f}",
                f"{loaded['wall']:.0f}",
                f"{loaded['input']:.2f}",
                f"{loaded['training']:.0f}",
                loaded["steps"],
                f"{loaded['loss']:.4f}",
            ]
        ],
    )
    verdict = "met" if growth < 300 else "MISSED"
    return (
        f"### Streaming: peak memory against the dataset's size ({time.strftime('%Y-%m-%d')})\n\n"
        f"`python benchmarks/streaming_memory.py --gigabytes {args.gigabytes} --steps {args.steps} --rounds "
        f"{args.rounds}`: the tiny model, LoRA, {args.steps} steps of 4 packed rows of up to {MAX_SEQ_LENGTH} tokens, "
        "shuffle buffer 1,000, a checkpoint (with its stream state) every 10 steps, 2 torch threads; seeded ShareGPT rows of 2-4 "
        "exchanges; each run a fresh process, peak RSS from wait4; INPUT and DO seconds from its run.json (a "
        "streamed run reads and tokenizes during DO).\n\n"
        f"{table}\n\n"
        f"Growth from 1% to the whole file: **{growth:+.0f} MiB** (target under 300 MB: {verdict}); the file is "
        f"{sizes['big'] / sizes['small']:.0f}x larger.\n\n{machine_lines(info, load_start, load_end)}\n"
    )


if __name__ == "__main__":
    main()
