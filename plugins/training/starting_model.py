"""Where a training run starts: the configured model, a PEFT adapter to continue on its base
(``model_name_or_path`` pointing at an adapter folder), or the model an earlier DO step left in
``training.result``. Light: no torch here.

An adapter is continued as it was saved: its rank, alpha, target modules and DoRA setting win over
training_config's LoRA settings, which are announced as ignored where they differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entity_training import ConfigError, InputError, Problem

if TYPE_CHECKING:
    from plugins.training_config import ResolvedTrainingConfig, TrainingConfig


@dataclass(frozen=True)
class StartingModel:
    """The weights a run starts from: a whole model, and optionally a PEFT adapter on it to continue."""

    model: str  # a registry name, a local folder or a Hub id
    adapter: str | None = None  # a PEFT adapter folder trained on ``model``
    origin: str = "training_config"  # where the choice came from, for the log

    def describe(self) -> str:
        weights = f"the adapter {self.adapter} continued on {self.model}" if self.adapter else self.model
        return weights if self.origin == "training_config" else f"{weights} ({self.origin})"


def starting_model(config: ResolvedTrainingConfig, previous: dict[str, Any] | None = None) -> StartingModel:
    """The model an earlier DO step trained (``previous``, its ``training.result``) when there is one,
    else the model of ``training.config`` (with the adapter it names, if any)."""
    if previous is None:
        return StartingModel(config.model_name_or_path, config.adapter_path)
    from plugins.models.adapters import is_adapter_folder

    base = previous.get("base_model")
    if base and base != config.model_name_or_path:
        raise ConfigError(
            Problem(
                f"this step continues the model of the DO step before, trained on {base!r}, but its own "
                f"training_config names {config.model_name_or_path!r}, whose tokenizer prepared its data. Give "
                "every training_config step of the workflow the same model_name_or_path.",
                path="model_name_or_path",
            )
        )
    final = Path(previous["final_model_path"])
    origin = f"the {previous.get('method', 'trained')} model of the DO step before, training.result"
    if not final.is_dir():
        raise InputError(
            Problem(
                f"training.result names the model of the DO step before as {final}, which does not exist. Run "
                "the workflow again from the start (without --resume), or remove that step's results from memory.",
                file=str(final),
            )
        )
    if is_adapter_folder(final):
        # The base that step loaded its adapter on (the same training.config's model in most workflows).
        return StartingModel(previous.get("base_model") or config.model_name_or_path, str(final), origin)
    return StartingModel(str(final), None, origin)


# training_config's LoRA setting -> how the saved adapter config reads it.
_ADAPTER_KEYS = {"lora_r": "r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout"}


def ignored_lora_settings(config: TrainingConfig, saved: dict[str, Any]) -> list[str]:
    """The LoRA settings written in training_config that differ from those of the continued adapter
    (``saved``, its adapter_config.json), which win."""
    written = config.model_fields_set
    ignored = [
        f"{name} {getattr(config, name)} (the adapter has {saved.get(key)})"
        for name, key in _ADAPTER_KEYS.items()
        if name in written and saved.get(key) is not None and float(getattr(config, name)) != float(saved[key])
    ]
    targets = config.target_modules
    if "target_modules" in written and isinstance(targets, list) and set(targets) != set(_as_list(saved)):
        ignored.append(f"target_modules {targets} (the adapter has {sorted(_as_list(saved))})")
    if "modules_to_save" in written and set(config.modules_to_save) != set(saved.get("modules_to_save") or ()):
        ignored.append(f"modules_to_save {config.modules_to_save} (the adapter has {saved.get('modules_to_save')})")
    dora = bool(saved.get("use_dora"))
    if config.training_method in ("lora", "dora") and (config.training_method == "dora") != dora:
        ignored.append(f"training_method {config.training_method} (the adapter is {'DoRA' if dora else 'LoRA'})")
    return ignored


def warn_ignored_lora_settings(warn: Callable[[str], None], config: TrainingConfig, saved: dict[str, Any]) -> None:
    """Warn about the LoRA settings of ``config`` that the continued adapter (``saved``) overrides."""
    ignored = ignored_lora_settings(config, saved)
    if ignored:
        warn(f"ignored, the continued adapter keeps its own settings: {'; '.join(ignored)}")


def _as_list(saved: dict[str, Any]) -> list[str]:
    targets = saved.get("target_modules") or []
    return [targets] if isinstance(targets, str) else list(targets)


def describe_adapter(saved: dict[str, Any]) -> str:
    """The continued adapter's settings (``saved``, its adapter_config.json), for the log."""
    kind = "DoRA" if saved.get("use_dora") else "LoRA"
    return f"{kind} rank {saved.get('r')}, alpha {saved.get('lora_alpha')}, targets {sorted(_as_list(saved))}"
