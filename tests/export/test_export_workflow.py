"""The whole product through the engine on the tiny model: train, evaluate, export, report.

Slow (a real training run each); CI runs them, ``-m 'not slow'`` skips them locally.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.workflows import line_of, step, write_workflow

from entity_training.cli import main

EXPORTS = {"export_formats": ["huggingface", "gguf", "ollama"], "gguf_quantization": ["q8_0"]}


def _run(tmp_path: Path, thresholds: dict, *flags: str, exports: dict = EXPORTS) -> tuple[int, Path]:
    out = tmp_path / "run"
    config = write_workflow(
        tmp_path,
        name="workflow.yaml",
        run={"name": "e2e", "output_dir": out, "seed": 7},
        dataset={"max_samples": 30, "validation_split": 0.2},
        training={
            "training_method": "lora",
            "learning_rate": 1.0e-3,
            "max_steps": 3,
            "batch_size": 4,
            "logging_steps": 1,
        },
        preparation={"max_seq_length": 256},
        review=[step("evaluation", num_samples=2, generation={"max_new_tokens": 8}, thresholds=thresholds)],
        output=[
            step("model_export", **exports),
            step("inference_test", num_prompts=1, max_new_tokens=4, formats=["huggingface"]),
            step("run_report"),
        ],
    )
    return main(["--config", str(config), "--yes", *flags]), out


@pytest.mark.slow
def test_passing_run_exports_and_reports(tmp_path):
    code, out = _run(tmp_path, {"perplexity_max": 1.0e9})
    assert code == 0
    memory = json.loads((out / "memory.json").read_text())["entries"]
    assert memory["evaluation.report"]["status"] == "PASS"
    paths = memory["export.paths"]
    assert Path(paths["gguf"]["q8_0"]).is_file() and Path(paths["ollama"]).is_file()
    assert (Path(paths["huggingface"]) / "adapter_config.json").is_file()
    assert [row["name"] for row in memory["inference.report"]["models"]] == ["base", "huggingface"]
    html = (out / "report.html").read_text()
    assert 'class="series"' in html and "fine_tuning" in html  # loss curve and timings


@pytest.mark.slow
def test_failing_threshold_exits_3_and_skips_the_export(tmp_path):
    code, out = _run(tmp_path, {"loss_max": 0.001})
    assert code == 3
    memory = json.loads((out / "memory.json").read_text())["entries"]
    assert memory["evaluation.report"]["status"] == "FAIL"
    assert "loss_max" in memory["evaluation.report"]["failures"][0]
    assert not (out / "export").exists() and "export.paths" not in memory
    assert "FAIL" in (out / "report.html").read_text()  # the report is still written


@pytest.mark.slow
def test_full_fine_tune_of_a_lora_workflow_skips_merged_and_says_so(tmp_path, capsys):
    from plugins.export.formats import MERGED_OF_FULL

    exports = {"export_formats": ["huggingface", "merged", "gguf", "ollama"], "gguf_quantization": ["f16"]}
    code, out = _run(tmp_path, {"perplexity_max": 1.0e9}, "--method", "full", exports=exports)
    assert code == 0
    line = line_of(tmp_path / "workflow.yaml", "export_formats")
    printed = " ".join(capsys.readouterr().out.split())
    assert f"note: {tmp_path / 'workflow.yaml'}:{line}" in printed and MERGED_OF_FULL in printed  # in the plan
    memory = json.loads((out / "memory.json").read_text())["entries"]
    assert memory["export.report"]["notes"] == [MERGED_OF_FULL]
    paths = memory["export.paths"]
    assert set(paths) == {"huggingface", "gguf", "ollama"} and not (out / "export" / "merged").exists()
    assert memory["export.report"]["artefacts"]["huggingface"]["kind"] == "full"
    warnings = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert any(event["type"] == "warning" and event["message"] == MERGED_OF_FULL for event in warnings)
