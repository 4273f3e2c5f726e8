"""How many CPU threads torch should use: the physical cores that other work leaves idle.

With more runnable threads than cores, torch's OpenMP workers spin while they wait for a core:
on a 2-core machine under load, 1 thread instead of 2 took 2.1x less CPU per training step and
finished sooner (benchmarks/RESULTS.md). So ``auto`` counts the cores the load average says are
busy with other work and leaves them alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int  # physical cores this process may run on
    load_average: float  # 1-minute load average when the choice was made
    busy_cores: int  # cores counted as busy with other work

    def describe(self) -> str:
        if self.busy_cores == 0:
            return f"torch threads: {self.threads} (every one of {self.cores} physical cores is idle)"
        return (
            f"torch threads: {self.threads} of {self.cores} physical cores (load average {self.load_average:.1f}: "
            f"{self.busy_cores} busy with other work); set fine_tuning.torch_threads to override"
        )


def choose_threads(cores: int, load_average: float, processes: int = 1) -> ThreadChoice:
    """Threads per process for ``processes`` training processes on ``cores`` physical cores.

    Each of our processes is running one thread right now, which the load average counts: the
    rest of the load is other work. Busy cores are rounded to the nearest whole core, and every
    process keeps at least one thread.
    """
    cores = max(cores, 1)
    others = max(load_average - processes, 0.0)
    busy = min(int(others + 0.5), cores)
    threads = max((cores - busy) // max(processes, 1), 1)
    return ThreadChoice(threads=threads, cores=cores, load_average=load_average, busy_cores=busy)


def usable_physical_cores() -> int:
    """Physical cores, capped by the CPUs this process is allowed on (taskset, cgroup cpusets)."""
    import psutil

    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        physical = min(physical, len(os.sched_getaffinity(0)))
    return physical


def auto_threads(processes: int = 1) -> ThreadChoice:
    """The choice for this machine now (its load average is read once, at the start of training)."""
    return choose_threads(usable_physical_cores(), os.getloadavg()[0], processes)
