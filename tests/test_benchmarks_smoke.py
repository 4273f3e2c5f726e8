"""The benchmark scripts still run: each with its --quick setting (tiny model, a few rows), in a
subprocess, without touching benchmarks/RESULTS.md. No timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

needs_datasets = pytest.mark.skipif(
    not (SHARED_DATASETS / "alpaca_en_demo.json").is_file(),
    reason=f"the benchmarks train on {SHARED_DATASETS / 'alpaca_en_demo.json'}, which is absent",
)


def run_script(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_common_helpers_measure_a_child_and_keep_other_sections(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from benchmarks import common

    child = common.run_child([sys.executable, "-c", "x = bytearray(64 * 2**20); print('done')"])
    assert child.returncode == 0 and "done" in child.output
    assert child.peak_rss_bytes > 64 * 2**20  # the child's own peak, not this process's
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    common.write_section("one", "first")
    common.write_section("two", "second")
    common.write_section("one", "first again")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "first again" in text and "second" in text and "first\n" not in text
    assert common.markdown_table(["a", "b"], [[1, 2]]).splitlines()[2] == "| 1 | 2 |"


@pytest.mark.slow
@needs_datasets
def test_throughput_quick_runs_ours_and_trl_and_checks_isolation():
    output = run_script("throughput.py")
    assert "(a) ours" in output and "(b) TRL careful" in output
    assert "ours (PackedCollator" in output and "isolated" in output


@pytest.mark.slow
@needs_datasets
def test_startup_quick_measures_first_steps():
    output = run_script("startup.py")
    assert "time to first optimizer step, ours warm" in output
    assert "time to first optimizer step, TRL warm" in output


@pytest.mark.slow
def test_memory_plan_quick_compares_prediction_and_measurement():
    output = run_script("memory_plan.py")
    assert "| lora | 64 | 2 |" in output


@pytest.mark.slow
@needs_datasets
def test_preprocess_quick_times_both_sides_cold_and_warm():
    output = run_script("preprocess.py")
    assert "| alpaca_en_demo.json |" in output and "| glaive_toolcall_en_demo.json |" in output
    assert "**ours warm**" in output and "**TRL warm**" in output and "load average" in output


@pytest.mark.slow
def test_loss_memory_quick_trains_both_losses_to_the_same_value():
    output = run_script("loss_memory.py")
    rows = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in output.splitlines() if "| " in line}
    assert rows["plain"] == rows["chunked"]
