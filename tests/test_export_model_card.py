"""The model card written into every export folder."""

from __future__ import annotations

from plugins.export.model_card import CardInfo, render_model_card

EVALUATION = {
    "status": "PASS",
    "metrics": {"fine_tuned": {"loss": 1.2, "perplexity": 3.3}, "base": {"loss": 2.5, "perplexity": 12.2}},
}


def card(artefact: str, method: str = "lora", files: list[str] | None = None) -> str:
    return render_model_card(
        CardInfo(
            name="tiny-ft",
            base_model="tiny",
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
    assert text.startswith("---\nbase_model: tiny\nlibrary_name: peft\n")
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
