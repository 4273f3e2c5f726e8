"""How many CPU threads torch should use: the physical cores that other work leaves idle.

With more runnable threads than cores, torch's OpenMP workers spin while they wait for a core:
on a 2-core machine under load, 1 thread instead of 2 took 2.05x less CPU per training step and
1.5x less wall time (benchmarks/RESULTS.md). So ``auto`` measures how many cores other work keeps
busy right now and leaves them alone. It samples the CPU use for a moment instead of reading the
load average, because the 1-minute average still counts a job that ended seconds ago (a run
started right after another would otherwise take one thread on an idle machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SAMPLE_SECONDS = 0.25


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int  # physical cores this process may run on
    busy: float  # cores' worth of CPU other work was using when the choice was made

    def describe(self) -> str:
        if self.threads == self.cores:
            return f"torch threads: {self.threads} (all {self.cores} physical cores; other work uses {self.busy:.1f})"
        return (
            f"torch threads: {self.threads} of {self.cores} physical cores (other work is using {self.busy:.1f} "
            "cores); set fine_tuning.torch_threads to override"
        )


def choose_threads(cores: int, busy: float, processes: int = 1) -> ThreadChoice:
    """Threads per process for ``processes`` training processes on ``cores`` physical cores, when
    other work keeps ``busy`` cores' worth of CPU in use. Busy cores are rounded to the nearest
    whole core, and every process keeps at least one thread."""
    cores = max(cores, 1)
    busy_cores = min(int(max(busy, 0.0) + 0.5), cores)
    threads = max((cores - busy_cores) // max(processes, 1), 1)
    return ThreadChoice(threads=threads, cores=cores, busy=max(busy, 0.0))


def usable_physical_cores() -> int:
    """Physical cores, capped by the CPUs this process is allowed on (taskset, cgroup cpusets)."""
    import psutil

    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        physical = min(physical, len(os.sched_getaffinity(0)))
    return physical


def busy_cores_now(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU in use by other processes over the next ``seconds`` (this one waits)."""
    import psutil

    logical = psutil.cpu_count(logical=True) or 1
    own = psutil.Process()
    own.cpu_percent(None)  # start this process's counter
    total = psutil.cpu_percent(interval=seconds) / 100 * logical
    return max(total - own.cpu_percent(None) / 100, 0.0)


def auto_threads(processes: int = 1) -> ThreadChoice:
    """The choice for this machine now. Several training processes of one run (torchrun) split
    the cores evenly: at their start they load models, which would read as other work."""
    cores = usable_physical_cores()
    if processes > 1:
        return choose_threads(cores, 0.0, processes)
    return choose_threads(cores, busy_cores_now(), processes)
