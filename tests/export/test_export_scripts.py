"""scripts/merge_adapter.py, convert_to_gguf.py, benchmark.py: same code as the plugin, exit codes."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from helpers.export_fixtures import make_lora_adapter, trained_model_dir  # noqa: F401

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_built_in_tool_is_called_by_a_script_through_the_router():
    from entity_training.registry import DISTRIBUTION, entry_point_plugins

    built_in = entry_point_plugins(DISTRIBUTION)
    offered = {
        (plugin, name) for plugin, entry in built_in.items() for name in getattr(entry.load(), "tool_names", list)()
    }
    called = {
        match.groups()
        for script in SCRIPTS.glob("*.py")
        for match in re.finditer(r'call_tool\(\s*"(\w+)",\s*"(\w+)"', script.read_text(encoding="utf-8"))
    }
    assert offered and offered == called


@pytest.mark.parametrize("name", ["merge_adapter", "convert_to_gguf", "benchmark"])
def test_help_shows_examples(name, capsys):
    with pytest.raises(SystemExit) as exited:
        load_script(name).main(["--help"])
    assert exited.value.code == 0
    assert "Examples:" in capsys.readouterr().out


def test_convert_an_adapter_with_a_modelfile_then_benchmark(tmp_path, trained_model_dir, capsys):  # noqa: F811
    adapter = make_lora_adapter(trained_model_dir, tmp_path / "final-model")
    out = tmp_path / "out" / "model-f16.gguf"
    code = load_script("convert_to_gguf").main(
        [str(adapter), "--output", str(out), "--quantization", "f16", "--modelfile", "--num-ctx", "128"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert out.is_file() and result["gguf_reader"]["tensor_count"] == 21
    assert "PARAMETER num_ctx 128" in Path(result["modelfile"]).read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["Modelfile", "model-f16.gguf"]  # merge scratch removed

    if importlib.util.find_spec("llama_cpp"):
        code = load_script("benchmark").main([str(out), "--max-new-tokens", "4", "--prompt", "What is 1 plus 2?"])
        assert code == 0
        rows = json.loads(capsys.readouterr().out)["models"]
        assert rows[0]["kind"] == "gguf" and rows[0]["new_tokens"] > 0


def test_merge_script_and_bad_input_exit_code(tmp_path, trained_model_dir, capsys):  # noqa: F811
    adapter = make_lora_adapter(trained_model_dir, tmp_path / "final-model")
    assert load_script("merge_adapter").main([str(adapter), "--output", str(tmp_path / "merged")]) == 0
    assert json.loads(capsys.readouterr().out)["verification"]["saved_float16"]["passed"]

    code = load_script("merge_adapter").main([str(trained_model_dir), "--output", str(tmp_path / "m2")])
    assert code == 2 and "nothing to merge" in capsys.readouterr().err
    code = load_script("convert_to_gguf").main(
        [
            str(adapter),
            "--output",
            str(tmp_path / "x.gguf"),
            "--quantization",
            "q4_k_m",
            "--llama-cpp-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and "llama-quantize" in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()


def test_merge_script_refuses_a_pickle_base_unless_allowed(tmp_path, trained_model_dir, capsys):  # noqa: F811
    import shutil

    import torch
    from safetensors.torch import load_file

    pickle_base = tmp_path / "pickle-base"
    shutil.copytree(trained_model_dir, pickle_base)
    weights = pickle_base / "model.safetensors"
    torch.save(load_file(weights), pickle_base / "pytorch_model.bin")
    weights.unlink()
    adapter = make_lora_adapter(pickle_base, tmp_path / "final-model")  # records pickle_base as its base
    merge = load_script("merge_adapter").main

    code = merge([str(adapter), "--output", str(tmp_path / "refused")])
    assert code == 2 and "allow_pickle" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    code = merge([str(adapter), "--output", str(tmp_path / "merged"), "--allow-pickle"])
    assert code == 0 and json.loads(capsys.readouterr().out)["verification"]["saved_float16"]["passed"]


def test_benchmark_an_adapter_against_its_base(tmp_path, trained_model_dir, capsys):  # noqa: F811
    adapter = make_lora_adapter(trained_model_dir, tmp_path / "final-model")
    code = load_script("benchmark").main(
        [str(adapter), "--base-model", str(trained_model_dir), "--max-new-tokens", "2", "--prompt", "Hi there"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [(row["name"], row["kind"]) for row in result["models"]] == [("base", "hf"), ("final-model", "adapter")]
    assert result["prompts"][0] != "Hi there" and "Hi there" in result["prompts"][0]  # in the chat template
