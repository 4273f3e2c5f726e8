"""The model card written into every export folder."""

from __future__ import annotations

import json

from plugins.export.model_card import CardInfo, render_model_card
from plugins.models import registry

EVALUATION = {
    "status": "PASS",
    "metrics": {"fine_tuned": {"loss": 1.2, "perplexity": 3.3}, "base": {"loss": 2.5, "perplexity": 12.2}},
}


def card(artefact: str, method: str = "lora", files: list[str] | None = None, base_model: str = "tiny") -> str:
    return render_model_card(
        CardInfo(
            name="tiny-ft",
            base_model=base_model,
            method=method,
            artefact=artefact,
            files=files or [],
            training_config={"training_method": method, "learning_rate": 1e-3, "lora_r": 16, "unrelated_key": 1},
            training_result={"steps": 40, "train_loss": 0.8},
            dataset_stats={"rows": 100, "format": "alpaca"},
            evaluation=EVALUATION,
            max_seq_length=512,
            hub_model_id="me/tiny-ft",
        )
    )


def test_adapter_card_has_every_section():
    text = card("huggingface")
    assert text.startswith("---\nbase_model: tiny\nlicense: unknown\nlibrary_name: peft\n")
    for section in ("## Training data", "## Training", "## Evaluation: PASS", "## Usage", "## Limitations"):
        assert section in text
    assert "| perplexity | 3.3 | 12.2 |" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/tiny-ft")' in text
    assert "max sequence length: 512" in text and "unrelated_key" not in text


def test_merged_and_gguf_cards_show_their_own_usage():
    merged = card("merged")
    assert "library_name: transformers" in merged and "AutoModelForCausalLM.from_pretrained" in merged
    gguf = card("gguf", files=["Modelfile", "tiny-ft-q8_0.gguf"])
    assert "llama-cli -m tiny-ft-q8_0.gguf" in gguf and "ollama create tiny-ft -f Modelfile" in gguf
    assert "- `tiny-ft-q8_0.gguf`" in gguf
    assert "full model weights" in card("huggingface", method="full")


def test_the_licence_comes_from_the_registry_entry(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})  # registrations of this test only
    registry.register_model("licensed", "some-org/licensed-model", "hf", license="apache-2.0")
    text = card("merged", base_model="licensed")
    assert "base_model: licensed\nlicense: apache-2.0\n" in text
    assert "## Licence\n\nThe base model `licensed` is licensed under `apache-2.0`" in text


def test_a_base_converted_from_gguf_is_named_by_its_original_file(tmp_path):
    folder = tmp_path / "cache" / "models" / "gguf" / "0123abcd-v1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    note = {"original_path": "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "0123abcd", "license": "mit"}
    (folder / "source.json").write_text(json.dumps(note))
    text = card("huggingface", base_model=str(folder))
    assert "base_model: /models/SmolLM2-135M-Instruct.Q4_1.gguf\nlicense: mit\n" in text
    assert str(folder) not in text


def test_the_licence_comes_from_the_base_folders_readme(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-4.0\ntags: [x]\n---\n# A model\n")
    assert "license: cc-by-4.0\n" in card("merged", base_model=str(tmp_path))


def test_an_unknown_licence_is_said_with_what_to_do():
    text = card("gguf", base_model="some-org/some-model", files=["tiny-ft-q8_0.gguf"])
    assert "base_model: some-org/some-model\nlicense: unknown\n" in text
    assert "Check the base model's licence before using or sharing" in text
