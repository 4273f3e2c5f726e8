"""fine_tuning.torch_threads: auto leaves the cores that other work keeps busy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.fine_tuning import FineTuningConfig
from plugins.training.threads import choose_threads, usable_physical_cores


@pytest.mark.parametrize(
    ("cores", "load", "processes", "threads"),
    [
        (2, 0.1, 1, 2),  # idle machine: every core
        (2, 1.0, 1, 2),  # the load is our own thread
        (2, 1.6, 1, 1),  # another job holds most of a core
        (2, 8.0, 1, 1),  # overloaded: one thread, never zero
        (16, 5.0, 1, 12),
        (16, 1.0, 4, 4),  # four training processes share the idle cores
        (16, 8.0, 4, 3),
    ],
)
def test_auto_takes_the_idle_physical_cores(cores, load, processes, threads):
    assert choose_threads(cores, load, processes).threads == threads


@given(
    cores=st.integers(min_value=1, max_value=256),
    load=st.floats(min_value=0, max_value=1000, allow_nan=False),
    processes=st.integers(min_value=1, max_value=16),
)
def test_choice_is_between_one_and_the_cores_per_process(cores, load, processes):
    choice = choose_threads(cores, load, processes)
    assert 1 <= choice.threads <= max(cores // processes, 1)
    assert 0 <= choice.busy_cores <= cores


def test_more_load_never_means_more_threads():
    threads = [choose_threads(8, load / 4).threads for load in range(0, 64)]
    assert threads == sorted(threads, reverse=True)


def test_the_log_line_names_the_load_and_the_override_when_cores_are_left_out():
    busy = choose_threads(4, 3.2).describe()
    assert "2 of 4 physical cores" in busy and "load average 3.2" in busy and "torch_threads" in busy
    assert "every one of 4" in choose_threads(4, 0.0).describe()


def test_usable_cores_respect_the_affinity_mask():
    import os

    assert 1 <= usable_physical_cores() <= len(os.sched_getaffinity(0))


def test_config_accepts_auto_an_integer_or_null_and_refuses_zero():
    assert FineTuningConfig().torch_threads == "auto"
    assert FineTuningConfig(torch_threads=3).torch_threads == 3
    assert FineTuningConfig(torch_threads=None).torch_threads is None
    with pytest.raises(ValueError):
        FineTuningConfig(torch_threads=0)
