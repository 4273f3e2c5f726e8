"""InferenceTestPlugin: every exported model loads and answers; speed and memory vs the base."""

from __future__ import annotations

import importlib.util

import pytest
from helpers.export_fixtures import fill_memory_for_export, make_lora_adapter, trained_model_dir  # noqa: F401

from entity_training import Stage
from entity_training.memory import Memory
from plugins import memory_keys as keys
from plugins.eval.benchmark import artefact_kind
from plugins.evaluation import EvaluationPlugin
from plugins.inference_test import InferenceTestPlugin
from plugins.model_export import ModelExportPlugin


async def _export(run_dir, trained_model_dir, make_context, gguf_quantization: str) -> Memory:  # noqa: F811
    make_lora_adapter(trained_model_dir, run_dir / "final-model")
    memory = Memory()
    fill_memory_for_export(memory, run_dir / "final-model", str(trained_model_dir))
    exporter = ModelExportPlugin(
        {
            "export_formats": ["huggingface", "merged", "gguf"],
            "gguf_quantization": [gguf_quantization],
            "verify": False,
        }
    )
    await exporter.execute(make_context(Stage.OUTPUT, memory=memory, run_dir=run_dir))
    return memory


@pytest.fixture
async def exported_run(tmp_path, trained_model_dir, make_context):  # noqa: F811
    return tmp_path, await _export(tmp_path, trained_model_dir, make_context, "q8_0")


async def test_every_export_is_measured_against_the_base(make_context, exported_run):
    run_dir, memory = exported_run
    plugin = InferenceTestPlugin({"num_prompts": 2, "max_new_tokens": 8})
    await plugin.execute(make_context(Stage.OUTPUT, memory=memory, run_dir=run_dir))

    report = memory.get(keys.INFERENCE_REPORT)
    names = [row["name"] for row in report["models"]]
    expected = ["base", "huggingface", "merged"] + (["gguf q8_0"] if importlib.util.find_spec("llama_cpp") else [])
    assert names == expected
    assert len(report["prompts"]) == 2 and report["prompts"][0].endswith("<|im_start|>assistant\n")
    for row in report["models"]:
        assert row["new_tokens"] > 0 and row["tokens_per_second"] > 0
        assert row["peak_memory_bytes"] >= 0 and row["load_seconds"] >= 0
        assert row["speed_vs_base"] > 0
    kinds = {row["name"]: row["kind"] for row in report["models"]}
    assert kinds["huggingface"] == "adapter" and kinds["merged"] == "hf"
    assert report["behaviour"] is None and all(row["behaviour"] is None for row in report["models"])


async def test_custom_prompts_and_format_selection(make_context, exported_run):
    run_dir, memory = exported_run
    plugin = InferenceTestPlugin(
        {"prompts": ["What is 3 plus 4?"], "formats": ["merged"], "include_base": False, "max_new_tokens": 6}
    )
    await plugin.execute(make_context(Stage.OUTPUT, memory=memory, run_dir=run_dir))
    report = memory.get(keys.INFERENCE_REPORT)
    assert [row["name"] for row in report["models"]] == ["merged"]
    assert "What is 3 plus 4?" in report["prompts"][0]


# The tiny model answers sums and colours and never says "zebra": one check it passes, one it fails.
CHECKS = [
    {"prompt": "What is 2 plus 3?", "none_of": ["zebra"]},
    {"prompt": "Name the colour of item 2.", "system": "You are a helpful assistant.", "any_of": ["zebra"]},
]


async def _behaviour_through_exports(make_context, run_dir, memory, **config) -> dict:
    """Evaluate with the checks (as REVIEW would), then run the inference test on the exports."""
    import json

    checks = run_dir / "checks.jsonl"
    checks.write_text("".join(json.dumps(row) + "\n" for row in CHECKS), encoding="utf-8")
    evaluation = EvaluationPlugin(
        {
            "metrics": ["loss"],
            "num_samples": 0,
            "compare_with_base": False,
            "generation": {"max_new_tokens": 8},
            "behaviour_checks": str(checks),
        }
    )
    await evaluation.execute(make_context(Stage.REVIEW, memory=memory, run_dir=run_dir))
    plugin = InferenceTestPlugin({"num_prompts": 1, "max_new_tokens": 4, "agreement_words": 3, **config})
    await plugin.execute(make_context(Stage.OUTPUT, memory=memory, run_dir=run_dir))
    return memory.get(keys.INFERENCE_REPORT)


async def test_behaviour_checks_through_the_transformers_exports(make_context, exported_run):
    run_dir, memory = exported_run
    report = await _behaviour_through_exports(make_context, run_dir, memory, formats=["huggingface", "merged"])
    assert report["behaviour"] == {
        "checks": 2,
        "prompts": [c["prompt"] for c in CHECKS],
        "max_new_tokens": 8,
        "agreement_words": 3,
    }
    rows = {row["name"]: row["behaviour"] for row in report["models"]}
    assert list(rows) == ["base", "huggingface", "merged"]
    assert rows.pop("base") is None  # the evaluation scored the base model on these prompts already
    for behaviour in rows.values():
        assert behaviour["pass_rate"] == 0.5 and behaviour["chat_template"] == "training"
        assert [a["passed"] for a in behaviour["answers"]] == [True, False]
        assert 0 <= behaviour["identical_rate"] <= behaviour["first_words_rate"] <= 1
    assert rows["huggingface"]["identical_rate"] == 1.0  # the adapter itself: the very answers of the evaluation
    assert report["models"][1]["tokens_per_second"] > 0  # the speed measurement is still there


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed (the [gguf] extra)"
)
async def test_behaviour_checks_through_the_gguf_with_its_own_chat_template(
    make_context,
    tmp_path,
    trained_model_dir,  # noqa: F811
):
    # f16: the q8_0 AMX kernels of a native llama.cpp build crash (scripts/install_llama_cpp.sh builds it portable)
    run_dir, memory = tmp_path, await _export(tmp_path, trained_model_dir, make_context, "f16")
    report = await _behaviour_through_exports(make_context, run_dir, memory, formats=["gguf"], include_base=False)
    (row,) = report["models"]
    assert row["name"] == "gguf f16" and row["tokens_per_second"] > 0
    behaviour = row["behaviour"]
    assert behaviour["chat_template"] == "gguf metadata"
    assert behaviour["pass_rate"] == 0.5 and behaviour["answers"][1]["failed"] == ["any_of: none of ['zebra'] appears"]
    assert 0 <= behaviour["identical_rate"] <= behaviour["first_words_rate"] <= 1


PEAK_PROBE = """
import numpy as np
from plugins.eval.benchmark import PeakMemory
meter = PeakMemory(interval_s=0.001)
with meter.measure():
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    block.sum()
print(meter.kind, meter.peak)
"""


def test_peak_memory_sees_an_allocation():
    # In a process of its own: in the test session's process, memory that other tests' threads
    # free meanwhile can hide the increase (seen once in a full run: a peak of 4 KiB).
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True, cwd=repo, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    kind, peak = done.stdout.split()
    if kind == "rss_increase":
        assert int(peak) >= 32 * 1024 * 1024


def test_artefact_kind(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert artefact_kind(tmp_path / "adapter") == "adapter"
    assert artefact_kind(tmp_path / "m.gguf") == "gguf"
    assert artefact_kind(tmp_path) == "hf"
