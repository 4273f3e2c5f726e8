"""fine_tuning.torch_threads: auto leaves the cores that other work keeps busy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.fine_tuning import FineTuningConfig
from plugins.training.threads import busy_cores_now, choose_threads, usable_physical_cores


@pytest.mark.parametrize(
    ("cores", "busy", "processes", "threads"),
    [
        (2, 0.0, 1, 2),  # idle machine: every core
        (2, 0.4, 1, 2),  # a little background work
        (2, 0.6, 1, 1),  # another job holds most of a core
        (2, 7.0, 1, 1),  # overloaded: one thread, never zero
        (16, 4.0, 1, 12),
        (16, 0.0, 4, 4),  # four training processes share the cores
        (16, 4.0, 4, 3),
    ],
)
def test_auto_takes_the_idle_physical_cores(cores, busy, processes, threads):
    assert choose_threads(cores, busy, processes).threads == threads


@given(
    cores=st.integers(min_value=1, max_value=256),
    busy=st.floats(min_value=-1, max_value=1000, allow_nan=False),
    processes=st.integers(min_value=1, max_value=16),
)
def test_choice_is_between_one_and_the_cores_per_process(cores, busy, processes):
    choice = choose_threads(cores, busy, processes)
    assert 1 <= choice.threads <= max(cores // processes, 1)


def test_more_other_work_never_means_more_threads():
    threads = [choose_threads(8, busy / 4).threads for busy in range(0, 64)]
    assert threads == sorted(threads, reverse=True)


def test_the_log_line_names_the_other_work_and_the_override_when_cores_are_left_out():
    busy = choose_threads(4, 2.2).describe()
    assert "2 of 4 physical cores" in busy and "using 2.2 cores" in busy and "torch_threads" in busy
    assert "all 4 physical cores" in choose_threads(4, 0.0).describe()


def test_a_spinning_process_beside_us_counts_as_busy():
    import multiprocessing

    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=_spin, args=(stop,))
    spinner.start()
    try:
        assert busy_cores_now(0.5) >= 0.5
    finally:
        stop.set()
        spinner.join()


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def test_usable_cores_respect_the_affinity_mask():
    import os

    assert 1 <= usable_physical_cores() <= len(os.sched_getaffinity(0))


def test_config_accepts_auto_an_integer_or_null_and_refuses_zero():
    assert FineTuningConfig().torch_threads == "auto"
    assert FineTuningConfig(torch_threads=3).torch_threads == 3
    assert FineTuningConfig(torch_threads=None).torch_threads is None
    with pytest.raises(ValueError):
        FineTuningConfig(torch_threads=0)


def test_this_process_working_during_the_sample_is_not_other_work():
    """Our own busy core is subtracted: the reading while we spin exceeds the reading while we wait
    by far less than the core we used. Other processes' load moves both readings, so each attempt
    compares two samples taken back to back, and the smallest excess of three attempts counts."""
    import time

    from plugins.training.threads import OtherCpuUse, busy_cores_now

    def excess() -> float:
        idle = busy_cores_now(0.5)
        sample = OtherCpuUse()
        until = time.process_time() + 0.5
        while time.process_time() < until:  # a whole core of our own, as imports and model loading use
            pass
        return sample.busy_cores(min_seconds=0) - idle

    assert min(excess() for _ in range(3)) < 0.75
