"""Contradictions between the training and export settings are found when the workflow is loaded.

Each one is either an exit-2 error located at the file and line (or the flag) to change, or a
notice announcing a harmless adjustment. Config only: nothing is trained or loaded.
"""

from __future__ import annotations

import pytest
from helpers.workflows import line_of, step, write_workflow

from entity_training import ConfigError
from entity_training.cli import main
from entity_training.overrides import Override, parse_set_argument
from entity_training.workflow import load_workflow
from plugins.export.formats import GGUF_FOR_OLLAMA, MERGED_AS_HUGGINGFACE, MERGED_OF_FULL, formats_for
from plugins.model_export import QUANTIZED_BASE


def _write(tmp_path, method="lora", formats=("huggingface",), training=None, export=None):
    return write_workflow(
        tmp_path,
        dataset={"dataset_path": "data.jsonl"},
        training={"training_method": method, **(training or {})},
        output=[step("model_export", export_formats=list(formats), **(export or {}))],
    )


def _line(tmp_path, text: str) -> int:
    """The line of the workflow written last that holds ``text``."""
    return line_of(tmp_path / "wf.yaml", text)


def _notices(tmp_path, overrides=None, **settings):
    return [(n.line, n.file, n.message) for n in load_workflow(_write(tmp_path, **settings), overrides).notices]


def _problems(tmp_path, overrides=None, **settings):
    with pytest.raises(ConfigError) as caught:
        load_workflow(_write(tmp_path, **settings), overrides)
    assert caught.value.exit_code == 2
    return [(p.line, p.file, p.message) for p in caught.value.problems]


def test_a_consistent_workflow_has_no_notices(tmp_path):
    assert _notices(tmp_path, formats=["huggingface", "merged", "gguf", "ollama"]) == []


def test_merged_of_a_full_fine_tune_is_skipped_with_a_notice(tmp_path):
    [(line, _, message)] = _notices(tmp_path, method="full", formats=["huggingface", "merged"])
    assert line == _line(tmp_path, "export_formats") and message == f"model_export: {MERGED_OF_FULL}"


def test_merged_alone_of_a_full_fine_tune_becomes_the_huggingface_export(tmp_path):
    [(_, _, message)] = _notices(tmp_path, method="full", formats=["merged"])
    assert message.endswith(MERGED_AS_HUGGINGFACE)
    assert formats_for(["merged"], full_model=True) == ({"huggingface"}, [MERGED_AS_HUGGINGFACE])
    assert formats_for(["merged"], full_model=False) == ({"merged"}, [])


def test_method_flag_full_on_a_lora_workflow_announces_what_it_ignores(tmp_path):
    notices = _notices(
        tmp_path,
        [Override("training_method", "full", "--method")],
        formats=["huggingface", "merged"],
        training={"lora_r": 8, "target_modules": ["q_proj"]},
    )
    assert [line for line, _, _ in notices] == [_line(tmp_path, "lora_r"), _line(tmp_path, "export_formats")]
    assert notices[0][2] == (
        "training_config: lora_r, target_modules ignored: a full fine-tune trains every weight, with no adapters"
    )
    assert MERGED_OF_FULL in notices[1][2]


def test_qlora_merges_into_the_unquantized_base_with_a_notice(tmp_path):
    [(line, _, message)] = _notices(tmp_path, method="qlora", formats=["huggingface", "merged", "gguf"])
    assert line == _line(tmp_path, "export_formats") and message == f"model_export: gguf, merged: {QUANTIZED_BASE}"
    assert _notices(tmp_path, method="qlora", formats=["huggingface"]) == []  # the adapter alone is exact


def test_ollama_without_gguf_adds_gguf(tmp_path):
    [(line, _, message)] = _notices(tmp_path, formats=["ollama"])
    assert line == _line(tmp_path, "export_formats") and message.endswith(GGUF_FOR_OLLAMA)
    assert formats_for(["ollama"]) == ({"ollama", "gguf"}, [GGUF_FOR_OLLAMA])


def test_gguf_settings_without_gguf_are_ignored_with_a_notice(tmp_path):
    notices = _notices(
        tmp_path,
        [parse_set_argument("model_export.gguf_pre_tokenizer=gpt-2")],
        export={"gguf_quantization": ["q4_0"], "system_prompt": "Be brief."},
    )
    workflow = str(tmp_path / "wf.yaml")
    assert notices == [
        (_line(tmp_path, "gguf_quantization"), workflow, "model_export: gguf_quantization ignored: export_formats has no gguf; add gguf to write it"),
        (None, "--set model_export.gguf_pre_tokenizer", "model_export: gguf_pre_tokenizer ignored: export_formats has no gguf; add gguf to write it"),
        (_line(tmp_path, "system_prompt"), workflow, "model_export: system_prompt ignored: export_formats has no ollama; add ollama to write it"),
    ]  # fmt: skip


def test_full_weight_formats_of_an_adapter_without_merging_stop_the_load(tmp_path):
    [(line, _, message)] = _problems(tmp_path, formats=["huggingface", "gguf"], export={"merge_adapter": False})
    assert (
        line == _line(tmp_path, "merge_adapter")
        and "merge_adapter is false" in message
        and "Set merge_adapter: true" in message
    )
    assert _notices(tmp_path, method="full", formats=["gguf"], export={"merge_adapter": False}) == []


def test_full_fine_tune_of_a_4_bit_base_points_at_load_in_4bit(tmp_path):
    [(line, _, message)] = _problems(
        tmp_path, [Override("training_method", "full", "--method")], method="qlora", training={"load_in_4bit": True}
    )
    assert line == _line(tmp_path, "load_in_4bit") and "set load_in_4bit: false (--set load_in_4bit=false)" in message


def test_4_bit_loading_that_the_method_overrides_is_announced(tmp_path):
    [(line, _, message)] = _notices(tmp_path, method="qlora", training={"load_in_4bit": False})
    assert line == _line(tmp_path, "load_in_4bit") and "load_in_4bit: false overridden" in message
    [(_, _, message)] = _notices(tmp_path, method="lora", training={"load_in_4bit": True})
    assert "trains the adapters on a 4-bit base (that is QLoRA)" in message
    [(line, _, message)] = _notices(tmp_path, training={"bnb_4bit_quant_type": "fp4"})
    assert (
        line == _line(tmp_path, "bnb_4bit")
        and "bnb_4bit_quant_type ignored: the base model is not loaded in 4-bit" in message
    )


def test_qlora_without_bitsandbytes_stops_the_load(tmp_path, monkeypatch):
    import plugins.training_config as training_config

    monkeypatch.setattr(training_config, "_has_bitsandbytes", lambda: False)
    [(_, _, message)] = _problems(tmp_path, [Override("training_method", "qlora", "--method")])
    assert "needs bitsandbytes" in message


def test_a_precision_the_device_cannot_run_stops_the_load(tmp_path, monkeypatch):
    import plugins.training.device as device

    cpu = device.DeviceInfo("cpu", "CPU (test)", False, False, 2**34, 2**33)
    monkeypatch.setattr(device, "detect_device", lambda: cpu)
    [(line, _, message)] = _problems(tmp_path, training={"precision": "bf16"})
    assert line == _line(tmp_path, "precision") and "no native bf16 support" in message
    [(_, file, message)] = _problems(tmp_path, [parse_set_argument("precision=fp16")])
    assert file == "--set precision" and "fp16 training needs a GPU" in message
    assert _notices(tmp_path, training={"precision": "fp32"}) == []


def test_validate_prints_the_notices(tmp_path, capsys):
    path = _write(tmp_path, formats=["huggingface", "merged"])
    assert main(["validate", str(path), "--method", "full"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"note: {path}:{_line(tmp_path, 'export_formats')}" in out and MERGED_OF_FULL in out
