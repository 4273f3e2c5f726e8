"""The benchmark scripts still run: each with its --quick setting (tiny model, a few rows), in a
subprocess, without touching benchmarks/RESULTS.md. No timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"

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


def test_presets_default_to_the_real_model_and_keep_small_and_quick(monkeypatch):
    sys.path.insert(0, str(REPO))
    from benchmarks import memory_plan, throughput

    monkeypatch.setattr(sys, "argv", ["throughput.py"])
    args = throughput.parse_args()
    assert (args.model, args.rows, args.variants) == ("smollm2-135m-instruct", 64, "a,b,h")
    monkeypatch.setattr(sys, "argv", ["throughput.py", "--small"])
    assert throughput.parse_args().model == "small"
    monkeypatch.setattr(sys, "argv", ["throughput.py", "--quick", "--rows", "4"])
    args = throughput.parse_args()
    assert (args.model, args.rows, args.no_full, args.no_write) == ("tiny", 4, True, True)
    monkeypatch.setattr(sys, "argv", ["memory_plan.py"])
    args = memory_plan.parse_args()
    assert (args.model, args.methods, args.lengths, args.precision) == (
        "smollm2-135m-instruct",
        "full,lora,qlora",
        "256,512",
        "fp32",
    )


def test_training_flops_count_the_head_on_every_token_below_the_chunked_loss_vocabulary():
    sys.path.insert(0, str(REPO))
    from benchmarks.flops import training_flops
    from benchmarks.jobs import Job
    from plugins.models import load_tokenizer

    tokenizer = load_tokenizer("tiny")
    rows = [
        {
            "prompt": [{"role": "user", "content": "Say hello to the world, please."}],
            "completion": [{"role": "assistant", "content": "Hello, world! " * 5}],
        }
    ]
    job = Job(dataset=Path("unused"), rows=1, model="tiny")
    full = training_flops(job, tokenizer, rows, method="full")
    lora = training_flops(job, tokenizer, rows, method="lora")
    assert 0 < full["trained_tokens"] < full["tokens"]
    assert not full["chunked_head"]  # tiny's vocabulary is below 32k: the head runs on every token
    assert full["dense"] == 6 * full["params"] * full["tokens"]
    assert lora["total"] < full["total"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATASETS / "dpo_en_demo.json").is_file(), reason="dpo_en_demo.json is absent")
def test_preference_quick_trains_ours_and_trls_dpo_to_the_same_loss():
    output = run_script("preference.py")
    rows = [line.split("|") for line in output.splitlines() if line.startswith("| ours (") or line.startswith("| TRL")]
    assert len(rows) == 2
    first_losses = {float(row[4]) for row in rows}
    assert first_losses == {0.6931}  # both start at log 2: the reference is the untrained model


def test_preference_benchmark_workflow_is_a_valid_dpo_workflow(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from benchmarks import preference
    from entity_training.workflow import load_workflow

    monkeypatch.setattr(sys, "argv", ["preference.py"])
    args = preference.parse_args()
    assert (args.model, args.steps, args.repeats, args.no_write) == ("smollm2-135m-instruct", 6, 2, False)
    job = preference.PreferenceJob(
        model="tiny", pairs_file=tmp_path / "pairs.json", trl_file=tmp_path / "pairs.jsonl", pairs=8, steps=4,
        batch_size=2, max_length=512, learning_rate=5e-5, precision="fp32",
    )  # fmt: skip
    (tmp_path / "workflow.yaml").write_text(preference.workflow_yaml(job, tmp_path / "cache"), encoding="utf-8")
    workflow = load_workflow(tmp_path / "workflow.yaml")
    assert [step.reference for step in workflow.steps][-1] == "preference_training"
