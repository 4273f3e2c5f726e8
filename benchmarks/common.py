"""Shared pieces of the benchmark scripts: child processes with their peak RSS, machine facts,
medians, the fp32 matmul peak and the sections of benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PYTHON = sys.executable


@dataclass
class ChildRun:
    """One benchmark child process: its wall time, its own peak RSS, its output and its start."""

    wall_seconds: float
    cpu_seconds: float  # user + system time of the child (all its threads): robust to a busy machine
    peak_rss_bytes: int
    returncode: int
    output: str
    started_at: float  # time.time() just before the process was spawned


def run_child(command: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> ChildRun:
    """Run ``command`` to completion; peak RSS comes from wait4's rusage of that child alone."""
    merged = {**os.environ, **(env or {})}
    started_at = time.time()
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=merged, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    cpu = usage.ru_utime + usage.ru_stime
    return ChildRun(wall, cpu, int(peak), process.returncode, output, started_at)


def require_ok(run: ChildRun, what: str) -> None:
    if run.returncode != 0:
        raise SystemExit(f"{what} failed (exit code {run.returncode}); its output ends with:\n{run.output[-3000:]}")


def require_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_file():
        raise SystemExit(f"{path} is missing: the benchmarks need the shared datasets folder ../shared/datasets.")
    return path


def model_folder(name: str) -> Path:
    """The Hugging Face folder of a model our workflow names ``name`` (built-in, registry name or
    path), for the TRL side and the isolation check, which load it with ``from_pretrained``.
    A registry GGUF is the folder converted from it once (plugins/models/gguf_source.py): the
    weights both sides then train are the same."""
    from plugins.models import builtin_names, ensure_builtin, resolve_model

    if name in builtin_names():
        return ensure_builtin(name)
    spec = resolve_model(name)
    if spec.chat_template:
        print(f"note: the registry gives {name} its own chat template; TRL uses the folder's tokenizer template")
    if spec.format == "gguf":
        from plugins.models.gguf_source import ensure_hf_folder

        return ensure_hf_folder(spec.path, license=spec.license)
    return Path(spec.folder)


def model_label(name: str) -> str:
    """A short name for headings: the registry name, or a path's last component."""
    return Path(name).name if ("/" in name or "\\" in name) else name


def fill_from_preset(args: Any, presets: dict[str, dict[str, Any]]) -> None:
    """Set the options left at None from the run's preset: ``quick`` (--quick), ``small`` (--small)
    or ``real`` (the default job on the real model)."""
    preset = presets["quick" if args.quick else "small" if args.small else "real"]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_info() -> dict[str, str]:
    """The facts a reader needs to compare figures: CPU, cores, memory, library versions, date."""
    import psutil
    import torch

    versions = {}
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            versions[package] = "absent"
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_name(),
        "cores": f"{psutil.cpu_count(logical=False)} physical / {psutil.cpu_count()} logical, torch threads {torch.get_num_threads()}",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """The best fp32 ``torch.mm`` rate on square matrices with every torch thread, in GFLOP/s."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool and kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_lines(info: dict[str, str], load_start: str, load_end: str) -> str:
    busy = float(load_start.split()[0]) > 0.5 or float(load_end.split()[0]) > 0.5
    lines = [f"- {key}: {value}" for key, value in info.items()]
    lines.append(f"- load average (1/5/15 min) at start: {load_start}; at end: {load_end}")
    if busy:
        lines.append(
            "- **the machine was loaded by other work during this run**: absolute figures are pessimistic; "
            "the variants were alternated so the ratios are fairer than the absolute numbers"
        )
    return "\n".join(lines)


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the ``name`` section of RESULTS.md, leaving the other scripts' sections alone."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = (
        RESULTS.read_text(encoding="utf-8")
        if RESULTS.exists()
        else "# Benchmark results\n\nWritten by the scripts in benchmarks/; rerun them to refresh a section.\n"
    )
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: Path, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


def repo_on_path() -> None:
    """Let a script run as ``python benchmarks/x.py`` import ``plugins`` and ``benchmarks``."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


SHAREGPT_WORDS = (
    "the model reads each line of data and learns which word tends to follow which in a careful answer "
    "about rivers mountains cooking prices travel code tests engines weather music history numbers and plans"
).split()


def sharegpt_rows(seed: int = 0) -> Iterator[dict]:
    """Endless seeded ShareGPT conversations of 2 to 4 exchanges, questions of 5-40 words, answers of 20-200."""
    import random

    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choices(SHAREGPT_WORDS, k=rng.randint(low, high)))

    while True:
        turns = []
        for _ in range(rng.randint(2, 4)):
            turns += [{"from": "human", "value": text(5, 40) + "?"}, {"from": "gpt", "value": text(20, 200) + "."}]
        yield {"conversations": turns}
