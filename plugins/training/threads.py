"""How many CPU threads torch should use: the physical cores that other work leaves idle.

With more runnable threads than cores, torch's OpenMP workers spin while they wait for a core:
on a 2-core machine under load, 1 thread instead of 2 took 2.05x less CPU per training step and
1.5x less wall time (benchmarks/RESULTS.md). So ``auto`` measures how many cores other work keeps
busy right now and leaves them alone. It samples the CPU use for a moment instead of reading the
load average, because the 1-minute average still counts a job that ended seconds ago (a run
started right after another would otherwise take one thread on an idle machine). The sample is
taken while the training process imports and loads its model (``OtherCpuUse``), so that start-up
does not wait for it.
"""

from __future__ import annotations

import os
import time
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


class OtherCpuUse:
    """Cores' worth of CPU that other processes use from construction until ``busy_cores()``.

    This process's own CPU time is subtracted, so it may work meanwhile (import, load a model).
    """

    def __init__(self) -> None:
        import psutil

        self._own = psutil.Process()
        self._started = self._now()

    def _now(self) -> tuple[float, float, float]:
        import psutil

        system = psutil.cpu_times()
        idle = system.idle + getattr(system, "iowait", 0.0)
        # guest time is already counted in user time on Linux (psutil's cpu_percent does the same)
        total = sum(system) - getattr(system, "guest", 0.0) - getattr(system, "guest_nice", 0.0)
        own = self._own.cpu_times()
        return time.monotonic(), total - idle, own.user + own.system

    def busy_cores(self, min_seconds: float = SAMPLE_SECONDS) -> float:
        """The average over the sample, which first grows to ``min_seconds`` if it is shorter."""
        waited = time.monotonic() - self._started[0]
        if waited < min_seconds:
            time.sleep(min_seconds - waited)
        wall, busy, own = (after - before for after, before in zip(self._now(), self._started, strict=True))
        return max((busy - own) / wall, 0.0) if wall > 0 else 0.0


def busy_cores_now(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU in use by other processes over the next ``seconds`` (this one waits)."""
    return OtherCpuUse().busy_cores(seconds)


def auto_threads(processes: int = 1, sample: OtherCpuUse | None = None) -> ThreadChoice:
    """The choice for this machine now, from ``sample`` (or a fresh one). Several training
    processes of one run (torchrun) split the cores evenly: at their start they load models,
    which would read as other work."""
    cores = usable_physical_cores()
    if processes > 1:
        return choose_threads(cores, 0.0, processes)
    return choose_threads(cores, (sample or OtherCpuUse()).busy_cores(), processes)
