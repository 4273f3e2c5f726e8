"""Training that starts from an earlier model (issue #18): preference_training after fine_tuning
starts from the SFT model (adapter continued, reference = the SFT model, resume, export);
model_name_or_path may be a PEFT adapter folder (PARSE reads its base's config) or a full model
folder; a folder that is neither, or an adapter whose base cannot be found offline, stop with exit 2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.training import build_tiny_model_dir, packed_rows, run_do_plugin, write_tokenized
from safetensors.torch import load_file

from entity_training import ConfigError, InputError, RunInterrupted
from entity_training.memory import Memory
from plugins import memory_keys
from plugins.fine_tuning import FineTuningPlugin
from plugins.preference_training import PreferenceTrainingPlugin
from plugins.training.preference.trainer import PreferenceTrainer
from plugins.training.trainer import PackedTrainer
from plugins.training_config import TrainingConfigPlugin

SETTINGS = {"batch_size": 4, "logging_steps": 2, "save_steps": 4, "seed": 0, "lora_dropout": 0.0,
            "lr_scheduler": "constant", "lora_r": 4, "lora_alpha": 8}  # fmt: skip
LEARNING_RATE = {"lora": 1e-2, "full": 1e-3}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def sft(tmp_path_factory, tiny_model):
    """method -> the training.result of a 4-step fine_tuning run of the tiny model."""
    tokenized = write_tokenized(tmp_path_factory.mktemp("sft-data"), packed_rows(8), None, max_seq_length=64)
    results = {}
    for method in ("lora", "full"):
        settings = {**SETTINGS, "training_method": method, "learning_rate": LEARNING_RATE[method], "max_steps": 4}
        memory = asyncio.run(
            run_do_plugin(
                FineTuningPlugin({}), tmp_path_factory.mktemp(method), tiny_model, tokenized, training=settings
            )
        )
        results[method] = memory.get(memory_keys.TRAINING_RESULT)
    return results


def adapter_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


class Recorded:
    """What each PreferenceTrainer saw: its trainable weights when built, its precomputed references."""

    def __init__(self, monkeypatch):
        self.start_weights: list[dict[str, torch.Tensor]] = []
        self.trainers: list[PreferenceTrainer] = []
        self.references: list = []
        init, precompute = PreferenceTrainer.__init__, PreferenceTrainer.precompute_reference

        def keep(trainer, *args, **kwargs):
            init(trainer, *args, **kwargs)
            self.trainers.append(trainer)
            self.start_weights.append(_trainable_state(trainer.model))

        def keep_reference(trainer, rows):
            precompute(trainer, rows)
            self.references.append(rows.reference.copy())

        monkeypatch.setattr(PreferenceTrainer, "__init__", keep)
        monkeypatch.setattr(PreferenceTrainer, "precompute_reference", keep_reference)


def _trainable_state(model) -> dict[str, torch.Tensor]:
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        return {name: value.detach().clone() for name, value in get_peft_model_state_dict(model).items()}
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


async def run_dpo(
    run_dir, model, pairs, *, after=None, method="lora", max_steps=6, events=None, **options
) -> tuple[dict, Memory]:
    """preference_training (DPO) with the settings of the SFT runs; ``after``: the training.result an
    earlier DO step left in memory."""
    memory = Memory()
    if after is not None:
        memory.set(memory_keys.TRAINING_RESULT, after)
    settings = {**SETTINGS, "training_method": method, "learning_rate": LEARNING_RATE[method], "max_steps": max_steps}
    memory = await run_do_plugin(
        PreferenceTrainingPlugin({}), run_dir, model, pairs, training=settings, memory=memory, events=events, **options
    )
    return memory.get(memory_keys.TRAINING_RESULT), memory


def sequence_logps(model, rows) -> torch.Tensor:
    """(examples, 2) log-probabilities of each pair's chosen and rejected answers under ``model``."""
    from plugins.training.preference.batches import PreferenceCollator
    from plugins.training.validation_loss import row_losses

    batch = PreferenceCollator(pad_token_id=0)([rows[i] for i in range(len(rows))])
    with torch.no_grad():
        sums = -row_losses(model.eval()(input_ids=batch["input_ids"]).logits, batch["labels"])[0]
    return sums.reshape(2, -1).T


def load_adapter(base: str, adapter: str):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)


async def test_dpo_after_sft_continues_the_sft_adapter_against_the_sft_model(
    tiny_model, pairs, sft, tmp_path, monkeypatch
):
    from transformers import AutoModelForCausalLM

    from plugins.training.preference.batches import PreferenceRows

    sft_adapter = sft["lora"]["final_model_path"]
    sft_saved = adapter_weights(sft_adapter)
    recorded = Recorded(monkeypatch)
    events = []
    result, _ = await run_dpo(tmp_path, tiny_model, pairs, after=sft["lora"], events=events)

    # Starts from the SFT adapter's weights, as saved (rank 4, the SFT's).
    assert recorded.start_weights[0].keys() == sft_saved.keys()
    for name, value in sft_saved.items():
        torch.testing.assert_close(recorded.start_weights[0][name], value)
    # The reference log-probabilities are the SFT model's, not the base's (the adapter disabled).
    rows = PreferenceRows(pairs["train"])
    expected = sequence_logps(load_adapter(tiny_model, sft_adapter), rows)
    torch.testing.assert_close(torch.as_tensor(recorded.references[0]), expected, rtol=1e-3, atol=1e-3)
    base = sequence_logps(AutoModelForCausalLM.from_pretrained(tiny_model), rows)
    assert (base - expected).abs().max() > 0.05  # the SFT did move the model away from the base
    # DPO trains the adapter further, writes its own folder, and its result is the newest model.
    final = Path(result["final_model_path"])
    assert final == tmp_path / "preference_training" / "final-model"
    moved = adapter_weights(final)
    assert max((moved[name] - value).abs().max() for name, value in sft_saved.items()) > 1e-3
    assert result["base_model"] == tiny_model and result["started_from"]["adapter"] == sft_adapter
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 4
    assert adapter_weights(sft_adapter).keys() == sft_saved.keys()  # the SFT model is kept as it was
    logs = " ".join(e.get("message", "") for e in events if e["type"] == "log")
    assert f"starts from the adapter {sft_adapter}" in logs and "precompute_ref_logps: true (forced)" in logs


async def test_full_dpo_after_full_sft_starts_from_and_refers_to_the_sft_model(
    tiny_model, pairs, sft, tmp_path, monkeypatch
):
    sft_model = Path(sft["full"]["final_model_path"])
    sft_saved = load_file(str(sft_model / "model.safetensors"))
    recorded = Recorded(monkeypatch)
    result, _ = await run_dpo(tmp_path, tiny_model, pairs, after=sft["full"], method="full")
    trainer_start, reference = recorded.start_weights[0], recorded.trainers[0].ref_model.state_dict()
    for name, value in sft_saved.items():
        torch.testing.assert_close(trainer_start[name], value)
        torch.testing.assert_close(reference[name], value.to(reference[name].dtype))  # at the compute precision
    moved = load_file(str(Path(result["final_model_path"]) / "model.safetensors"))
    assert max((moved[name] - value).abs().max() for name, value in sft_saved.items()) > 1e-4


async def test_a_full_model_folder_as_model_name_or_path_is_the_starting_model(pairs, sft, tmp_path, monkeypatch):
    sft_model = sft["full"]["final_model_path"]
    recorded = Recorded(monkeypatch)
    result, memory = await run_dpo(tmp_path, sft_model, pairs, method="full", max_steps=2)
    for name, value in load_file(str(Path(sft_model) / "model.safetensors")).items():
        torch.testing.assert_close(recorded.start_weights[0][name], value)
    assert memory.get(memory_keys.TRAINING_CONFIG).adapter_path is None
    assert Path(result["final_model_path"]) == tmp_path / "final-model"


async def test_a_resumed_dpo_after_sft_ends_like_an_uninterrupted_one(tiny_model, pairs, sft, tmp_path, monkeypatch):
    """The checkpoint holds the continued adapter; the reference is recomputed from the SFT model."""
    recorded = Recorded(monkeypatch)
    straight, _ = await run_dpo(tmp_path / "straight", tiny_model, pairs, after=sft["lora"])
    interrupted = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted):
        await run_dpo(interrupted, tiny_model, pairs, after=sft["lora"], cancel_at_step=3)
    resumed, _ = await run_dpo(interrupted, tiny_model, pairs, after=sft["lora"], resume=True)
    assert Path(resumed["resumed_from"]).parent == interrupted / "preference_training" / "checkpoints"
    assert resumed["steps"] == straight["steps"] == 6
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-5)
    # Train and validation references of each run: the resumed run's are the starting model's too.
    assert len(recorded.references) == 6
    for index in (0, 1):
        torch.testing.assert_close(
            torch.as_tensor(recorded.references[4 + index]), torch.as_tensor(recorded.references[index])
        )


def _resolve(model: str, **settings):
    warnings = []
    config = TrainingConfigPlugin({"model_name_or_path": model, **settings}).resolve(
        seed=0, log=lambda message: None, warn=warnings.append
    )
    return config, warnings


def test_parse_reads_an_adapters_base_config_and_never_weights(tiny_model, sft, monkeypatch):
    import plugins.models.loaders as loaders

    monkeypatch.setattr(loaders, "load_causal_lm", lambda *a, **k: pytest.fail("PARSE loaded weights"))
    adapter = sft["lora"]["final_model_path"]
    config, warnings = _resolve(adapter, lora_r=16, target_modules=["q_proj"])
    assert config.model_name_or_path == tiny_model and config.adapter_path == adapter
    assert config.model_path == str(Path(tiny_model).resolve()) and config.total_params > 0
    assert len(warnings) == 1 and "lora_r 16 (the adapter has 4)" in warnings[0] and "target_modules" in warnings[0]
    assert _resolve(adapter, lora_r=4)[1] == []


@pytest.mark.parametrize("plugin", [FineTuningPlugin, PreferenceTrainingPlugin])
async def test_an_adapter_folder_as_model_name_or_path_is_continued(
    plugin, tiny_model, pairs, sft, tmp_path, monkeypatch
):
    adapter = sft["lora"]["final_model_path"]
    saved = adapter_weights(adapter)
    starts = []
    trainer_class = PackedTrainer if plugin is FineTuningPlugin else PreferenceTrainer
    init = trainer_class.__init__

    def keep(trainer, *args, **kwargs):
        init(trainer, *args, **kwargs)
        starts.append(_trainable_state(trainer.model))

    monkeypatch.setattr(trainer_class, "__init__", keep)
    data = (
        pairs
        if plugin is PreferenceTrainingPlugin
        else write_tokenized(tmp_path / "sft", packed_rows(8), None, max_seq_length=64)
    )
    settings = {**SETTINGS, "learning_rate": 1e-2, "max_steps": 2}
    memory = await run_do_plugin(plugin({}), tmp_path / "run", adapter, data, training=settings)
    for name, value in saved.items():
        torch.testing.assert_close(starts[0][name], value)
    result = memory.get(memory_keys.TRAINING_RESULT)
    assert result["base_model"] == tiny_model
    trained = adapter_weights(result["final_model_path"])
    assert max((trained[name] - value).abs().max() for name, value in saved.items()) > 1e-4
    # The continued adapter names the base it was trained on, so exports and evaluation find it.
    saved_config = json.loads((Path(result["final_model_path"]) / "adapter_config.json").read_text())
    assert Path(saved_config["base_model_name_or_path"]).resolve() == Path(tiny_model).resolve()


def test_a_folder_that_is_neither_a_model_nor_an_adapter_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(InputError) as caught:
        _resolve(str(tmp_path))
    assert caught.value.exit_code == 2 and str(tmp_path) in str(caught.value)
    assert "adapter_config.json" in str(caught.value)


def test_an_adapter_whose_base_is_not_available_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for base in ("entity-training-test/no-such-base", str(tmp_path / "gone-model")):
        (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 4}))
        with pytest.raises(InputError) as caught:
            _resolve(str(adapter))
        message = str(caught.value)
        assert caught.value.exit_code == 2 and base in message and "adapter_config.json" in message
        assert "Set base_model_name_or_path" in message


def test_an_adapters_moved_builtin_base_is_found_by_its_build_name(tmp_path):
    from plugins.models.adapters import read_adapter_folder
    from plugins.models.builtin import BUILTIN_RECIPES

    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": f"/elsewhere/models/{BUILTIN_RECIPES['tiny'].folder_name}"})
    )
    assert read_adapter_folder(tmp_path).base_model == "tiny"


async def test_the_merged_export_after_sft_then_dpo_is_the_dpo_model(tiny_model, pairs, sft, tmp_path):
    from transformers import AutoModelForCausalLM

    from entity_training.testing import run_plugin
    from plugins.model_export import ModelExportPlugin
    from plugins.models import CHATML_TEMPLATE
    from plugins.training.preference.batches import PreferenceRows

    result, memory = await run_dpo(tmp_path, tiny_model, pairs, after=sft["lora"], max_steps=2)
    config = memory.get(memory_keys.TRAINING_CONFIG)
    _, after = await run_plugin(
        ModelExportPlugin({"export_formats": ["merged"], "merge_dtype": "float16"}),
        run_dir=tmp_path,
        memory={
            memory_keys.TRAINING_RESULT: result,
            memory_keys.TRAINING_CONFIG: config,
            memory_keys.DATASET_TOKENIZED: {**pairs, "chat_template": CHATML_TEMPLATE},
        },
    )
    merged = AutoModelForCausalLM.from_pretrained(after[memory_keys.EXPORT_PATHS]["merged"], dtype=torch.float32)
    rows = PreferenceRows(pairs["train"])
    dpo = sequence_logps(load_adapter(tiny_model, result["final_model_path"]), rows)
    sft_logps = sequence_logps(load_adapter(tiny_model, sft["lora"]["final_model_path"]), rows)
    torch.testing.assert_close(sequence_logps(merged, rows), dpo, rtol=1e-2, atol=0.05)
    assert (dpo - sft_logps).abs().max() > 0.05


def test_a_dpo_step_whose_model_differs_from_the_sft_steps_is_refused():
    from plugins.training.starting_model import starting_model

    config = SimpleNamespace(model_name_or_path="small", adapter_path=None)
    with pytest.raises(ConfigError, match="same model_name_or_path"):
        starting_model(config, {"base_model": "tiny", "final_model_path": "/nowhere"})


@pytest.mark.slow
def test_the_sft_then_dpo_workflow_runs_end_to_end(tmp_path):
    """configs/sft_then_dpo.yaml on the tiny model: two datasets, two training configs, SFT then DPO
    continuing the SFT adapter, the export of the DPO model."""
    from helpers.cli import run_train

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    done = run_train(
        "--config", "configs/sft_then_dpo.yaml", "--model", "tiny", "--max-steps", "2", "--output", str(out),
        "--set", "preference_settings.model_name_or_path=tiny", "--set", "preference_settings.max_steps=2",
        "--yes", cwd=repo, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    entries = json.loads((out / "memory.json").read_text(encoding="utf-8"))["entries"]
    assert {"dataset.train", "preference.train", "preference.tokenized", "preference.memory_plan"} <= set(entries)
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "preference.train.jsonl", "preference.validation.jsonl", "train.jsonl", "validation.jsonl",
    ]  # fmt: skip
    result = entries["training.result"]
    assert result["loss"] == "dpo" and result["final_model_path"].startswith(str(out / "preference_training"))
    assert (out / "final-model" / "adapter_config.json").is_file()  # the SFT adapter, kept
    assert "continued" in done.stdout and (out / "export" / "merged").is_dir()
