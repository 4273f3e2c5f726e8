"""ModelExportPlugin: every format written, reloaded and verified; atomicity; bad input -> exit 2."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.export_fixtures import CONVERSATIONS, fill_memory_for_export, make_lora_adapter, trained_model_dir  # noqa: F401
from helpers.workflows import line_of, step, write_workflow

from entity_training import ConfigError, Stage
from entity_training.memory import Memory
from plugins import memory_keys as keys
from plugins.model_export import ModelExportPlugin

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed (optional extra [gguf])"
)


@pytest.fixture
def lora_run(tmp_path, trained_model_dir):  # noqa: F811
    """A run directory whose final-model/ is a LoRA adapter on the tiny trained model."""
    make_lora_adapter(trained_model_dir, tmp_path / "final-model")
    memory = Memory()
    fill_memory_for_export(memory, tmp_path / "final-model", str(trained_model_dir))
    return tmp_path, memory


@pytest.fixture
def full_run(tmp_path, trained_model_dir):  # noqa: F811
    """A run directory whose final-model/ holds full weights (a full fine-tune)."""
    shutil.copytree(trained_model_dir, tmp_path / "final-model")
    memory = Memory()
    fill_memory_for_export(memory, tmp_path / "final-model", str(trained_model_dir), method="full")
    return tmp_path, memory


async def _export(make_context, run_dir, memory, **config):
    plugin = ModelExportPlugin(config)
    context = make_context(Stage.OUTPUT, memory=memory, run_dir=run_dir)
    await plugin.initialize(context)
    await plugin.execute(context)
    return memory.get(keys.EXPORT_PATHS), memory.get(keys.EXPORT_REPORT)


def _logits(model, tokenizer):
    ids = tokenizer.apply_chat_template(
        CONVERSATIONS[0][:2], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        return model(input_ids=ids["input_ids"]).logits


async def test_every_format_is_written_reloaded_and_verified(make_context, lora_run, trained_model_dir):  # noqa: F811
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, memory = lora_run
    formats = ["huggingface", "merged", "safetensors", "gguf", "ollama"]
    paths, report = await _export(make_context, run_dir, memory, export_formats=formats, gguf_quantization=["f16"])

    assert set(paths) == set(formats)
    for name in ("huggingface", "merged", "safetensors", "gguf"):
        assert (run_dir / "export" / name / "README.md").is_file()
    assert not [p for p in (run_dir / "export").iterdir() if p.name.startswith(".")]  # no staging left

    tokenizer = AutoTokenizer.from_pretrained(paths["huggingface"])
    base = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    adapted = PeftModel.from_pretrained(base, paths["huggingface"]).eval()
    expected = _logits(adapted, tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(paths["merged"], dtype=torch.float32).eval()
    assert torch.allclose(_logits(merged, tokenizer), expected, atol=0.05)
    assert json.loads((Path(paths["merged"]) / "config.json").read_text())["dtype"] == "float16"
    assert set(load_file(paths["safetensors"])) >= {"model.embed_tokens.weight", "lm_head.weight"}

    merge_check = report["artefacts"]["merged"]["verification"]
    assert merge_check["merge_float32"]["max_abs_logit_diff"] < 1e-3
    assert merge_check["saved_float16"]["top1_agreement"] == 1.0
    gguf = report["artefacts"]["gguf"]["f16"]
    assert gguf["gguf_reader"]["chat_template_matches"] and gguf["gguf_reader"]["tensor_count"] == 21
    assert Path(paths["gguf"]["f16"]).is_file()
    if importlib.util.find_spec("llama_cpp"):
        assert gguf["llama_cpp"]["top1_agreement"] == 1.0 and gguf["llama_cpp"]["passed"]
    modelfile = Path(paths["ollama"]).read_text()
    assert modelfile.startswith(f"FROM ./{Path(paths['gguf']['f16']).name}\n")
    assert "PARAMETER num_ctx 128" in modelfile  # the training sequence length


async def test_full_fine_tune_exports_without_merging(make_context, full_run):
    run_dir, memory = full_run
    paths, report = await _export(
        make_context, run_dir, memory, export_formats=["huggingface", "gguf"], gguf_quantization=["q8_0"]
    )
    assert report["artefacts"]["huggingface"]["kind"] == "full"
    assert report["artefacts"]["huggingface"]["verification"]["max_abs_logit_diff"] == 0.0
    assert "merged" not in paths and Path(paths["gguf"]["q8_0"]).is_file()


@needs_llama_cpp
async def test_k_quant_export(make_context, full_run):
    run_dir, memory = full_run
    paths, report = await _export(make_context, run_dir, memory, export_formats=["gguf"], gguf_quantization=["q4_k_m"])
    assert report["artefacts"]["gguf"]["q4_k_m"]["llama_cpp"]["tokenization_match"]


async def test_interrupted_export_leaves_the_previous_export_intact(make_context, full_run, monkeypatch):
    run_dir, memory = full_run
    paths, _ = await _export(
        make_context, run_dir, memory, export_formats=["gguf"], gguf_quantization=["q8_0"], verify=False
    )
    good = Path(paths["gguf"]["q8_0"]).read_bytes()

    import plugins.export.gguf_writer as writer

    encode, calls = writer._encode, []

    def failing_encode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk write failed midway")
        return encode(*args, **kwargs)

    monkeypatch.setattr(writer, "_encode", failing_encode)
    with pytest.raises(OSError, match="midway"):
        await _export(make_context, run_dir, memory, export_formats=["gguf"], gguf_quantization=["q8_0"], verify=False)

    assert Path(paths["gguf"]["q8_0"]).read_bytes() == good
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["gguf"]  # no partial folders
    assert sorted(p.name for p in (run_dir / "export" / "gguf").iterdir()) == sorted(
        ["README.md", Path(paths["gguf"]["q8_0"]).name]
    )


# ---- bad input: a clear message and exit code 2 ------------------------------------------------


def test_unknown_export_format_is_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="huggingface"):
        ModelExportPlugin({"export_formats": ["onnx"]})


async def test_merged_of_a_full_fine_tune_is_skipped_and_reported(make_context, full_run):
    from plugins.export.formats import MERGED_AS_HUGGINGFACE

    run_dir, memory = full_run
    paths, report = await _export(make_context, run_dir, memory, export_formats=["merged"], verify=False)
    assert set(paths) == {"huggingface"} and report["notes"] == [MERGED_AS_HUGGINGFACE]
    assert report["artefacts"]["huggingface"]["kind"] == "full"
    assert not (run_dir / "export" / "merged").exists()


async def test_full_weight_formats_of_an_adapter_without_merging_are_refused(make_context, lora_run):
    run_dir, memory = lora_run
    with pytest.raises(ConfigError, match="merge_adapter is false") as caught:
        await _export(make_context, run_dir, memory, export_formats=["huggingface", "gguf"], merge_adapter=False)
    assert caught.value.exit_code == 2
    assert not (run_dir / "export" / "huggingface").exists()  # refused before writing anything


async def test_gguf_for_an_unsupported_architecture_is_refused_before_work(make_context, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    final = tmp_path / "final-model"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(final)
    from helpers.export_fixtures import build_tokenizer

    build_tokenizer(final)
    memory = Memory()
    fill_memory_for_export(memory, final, str(final), method="full")
    with pytest.raises(ConfigError, match="GPT2LMHeadModel.*Supported architectures: LlamaForCausalLM"):
        await _export(make_context, tmp_path, memory, export_formats=["huggingface", "gguf"])
    assert not (tmp_path / "export" / "huggingface").exists()


async def test_k_quant_without_llama_cpp_says_how_to_get_one(make_context, full_run, monkeypatch):
    import plugins.export.quantize as quantize

    monkeypatch.setattr(quantize, "llama_cpp_python_available", lambda: False)
    run_dir, memory = full_run
    with pytest.raises(ConfigError, match=r"entity-training\[gguf\].*llama_cpp_dir") as caught:
        await _export(make_context, run_dir, memory, export_formats=["gguf"], gguf_quantization=["q4_k_m"])
    assert caught.value.exit_code == 2


async def test_missing_llama_cpp_dir_binary(make_context, full_run, tmp_path):
    run_dir, memory = full_run
    with pytest.raises(ConfigError, match="no executable llama-quantize"):
        await _export(
            make_context,
            run_dir,
            memory,
            export_formats=["gguf"],
            gguf_quantization=["q5_k_m"],
            llama_cpp_dir=str(tmp_path),
        )


async def test_push_to_hub_without_a_token(make_context, full_run, monkeypatch):
    import plugins.export.hub as hub

    monkeypatch.setattr(hub, "hub_token", lambda: None)
    run_dir, memory = full_run
    with pytest.raises(ConfigError, match="HF_TOKEN") as caught:
        await _export(make_context, run_dir, memory, push_to_hub=True, hub_model_id="me/model")
    assert caught.value.exit_code == 2


async def test_output_path_that_is_a_file(make_context, full_run):
    run_dir, memory = full_run
    (run_dir / "taken").write_text("a file")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        await _export(make_context, run_dir, memory, output_path=str(run_dir / "taken"))


async def test_not_enough_disk_space_for_a_merge(make_context, lora_run, monkeypatch):
    import plugins.export.disk as disk

    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    run_dir, memory = lora_run
    with pytest.raises(ConfigError, match="not enough disk space for the merged model"):
        await _export(make_context, run_dir, memory, export_formats=["merged"])
    assert not (run_dir / "export" / "merged").exists()


async def test_tools_are_offered_and_match_the_plugin(full_run, tmp_path):
    run_dir, _ = full_run
    plugin = ModelExportPlugin()
    assert set(plugin.tool_names()) >= {"merge_adapter", "convert_to_gguf", "write_modelfile"}
    out = tmp_path / "out" / "m.gguf"
    result = await plugin.call_tool(
        "convert_to_gguf", model_dir=str(run_dir / "final-model"), output_file=str(out), quantization="f16"
    )
    assert out.is_file() and result["gguf_reader"]["tensor_count"] == 21
    modelfile = await plugin.call_tool(
        "write_modelfile", gguf_file=str(out), tokenizer_dir=str(run_dir / "final-model"), num_ctx=64
    )
    assert Path(modelfile).read_text().startswith("FROM ./m.gguf")


def test_unknown_export_format_in_a_workflow_is_a_config_error(tmp_path):
    from entity_training.workflow import load_workflow

    workflow = write_workflow(
        tmp_path, stages={"OUTPUT": [step("model_export", export_formats=["huggingface", "onnx"])]}
    )
    with pytest.raises(ConfigError) as caught:
        load_workflow(workflow)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    line = line_of(workflow, "export_formats")
    assert "onnx" in message and "export_formats" in message and f"wf.yaml:{line}" in message


async def test_push_to_hub_uploads_each_folder_without_exposing_the_token(make_context, full_run, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs["private"], kwargs["token"]))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(
                ("upload", kwargs["path_in_repo"], sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()))
            )

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    run_dir, memory = full_run
    _, report = await _export(
        make_context, run_dir, memory, push_to_hub=True, hub_model_id="me/tiny-ft", hub_private=True
    )

    assert calls[0] == ("create", "me/tiny-ft", True, "hf_secret_value_123")
    assert calls[1][0] == "upload" and calls[1][1] is None and "README.md" in calls[1][2]  # the card at the root
    hub = report["artefacts"]["hub"]
    assert (hub["repo"], hub["private"], hub["uploaded"]) == ("me/tiny-ft", True, ["huggingface"])
    assert "hf_secret_value_123" not in json.dumps(memory.to_json(), default=str)


async def test_hub_network_error_is_clear_and_hides_the_token(make_context, full_run, monkeypatch):
    import huggingface_hub

    from entity_training import PluginError

    class OfflineApi:
        def create_repo(self, repo_id, **kwargs):
            raise ConnectionError(f"could not connect (token={kwargs['token']})")

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    run_dir, memory = full_run
    with pytest.raises(PluginError) as caught:
        await _export(make_context, run_dir, memory, push_to_hub=True, hub_model_id="me/tiny-ft")
    assert "ConnectionError" in str(caught.value) and "local export is complete" in str(caught.value)
    assert "hf_secret_value_123" not in str(caught.value)


async def test_ollama_create_runs_when_ollama_is_installed(make_context, full_run, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ollama.log"
    fake = bin_dir / "ollama"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = run ] && echo "Hello from ollama"\nexit 0\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    run_dir, memory = full_run
    _, report = await _export(
        make_context, run_dir, memory, export_formats=["ollama"], gguf_quantization=["q8_0"], verify=False
    )
    commands = log.read_text().splitlines()
    assert commands[0].startswith("create ") and commands[0].endswith("/Modelfile")
    assert commands[1].startswith("run ")
    assert report["artefacts"]["ollama"]["ollama_run"]["reply"] == "Hello from ollama"


async def test_untranslatable_chat_template_is_refused_before_any_export(make_context, full_run):
    run_dir, memory = full_run
    position_dependent = "{% for m in messages %}{% if loop.last %}LAST:{% endif %}{{ m['content'] }}\n{% endfor %}"
    memory.set(keys.DATASET_TOKENIZED, {**memory.get(keys.DATASET_TOKENIZED), "chat_template": position_dependent})
    with pytest.raises(ConfigError, match="Remove 'ollama' from export_formats"):
        await _export(make_context, run_dir, memory, export_formats=["huggingface", "ollama"])
    assert not (run_dir / "export" / "huggingface").exists()


def test_the_recorded_base_folder_wins_over_a_registry_name(tmp_path):
    """An adapter stays tied to the exact base build it was trained on, even if a name now points elsewhere."""
    from plugins.eval.loading import exact_base_model

    (tmp_path / "small-v1").mkdir()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "small-v1")}))
    assert exact_base_model(adapter, "small") == str(tmp_path / "small-v1")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/hub-model"}))
    assert exact_base_model(adapter, "org/hub-model") == "org/hub-model"
