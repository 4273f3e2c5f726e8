"""A PEFT adapter folder (``adapter_config.json``) given where a model is expected, and its base
model, found offline: what ``training_config`` needs to continue training an adapter. Reads JSON
only; imports nothing heavy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entity_training import InputError, Problem
from plugins.models.builtin import BUILTIN_RECIPES
from plugins.models.hub import hub_offline, in_hub_cache
from plugins.models.registry import looks_like_hub_id, resolve_model

ADAPTER_CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class AdapterFolder:
    """A PEFT adapter: its folder, its saved config and the base model it was trained on."""

    path: str
    base_model: str  # a name ``resolve_model`` finds offline: a registry name, a local path or a Hub id
    config: dict[str, Any]


def is_adapter_folder(path: str | os.PathLike) -> bool:
    return (Path(path).expanduser() / ADAPTER_CONFIG_FILE).is_file()


def read_adapter_folder(path: str | os.PathLike) -> AdapterFolder:
    """The adapter in ``path`` and its base model; InputError (exit 2) when the base cannot be found."""
    folder = Path(path).expanduser().resolve()
    config = read_adapter_config(folder)
    return AdapterFolder(str(folder), _base_model(config, folder / ADAPTER_CONFIG_FILE), config)


def read_adapter_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The saved ``adapter_config.json`` of an adapter folder (rank, alpha, target modules, base model)."""
    config_file = Path(folder) / ADAPTER_CONFIG_FILE
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(Problem(f"cannot read this adapter config ({exc}).", file=str(config_file))) from exc
    if not isinstance(config, dict):
        raise InputError(Problem("this adapter config is not a JSON object.", file=str(config_file)))
    return config


def _base_model(config: dict[str, Any], config_file: Path) -> str:
    recorded = str(config.get("base_model_name_or_path") or "").strip()
    fix = (
        "Set base_model_name_or_path in this file to the base model the adapter was trained on: a registry "
        "name (tiny, small, smollm2-135m-instruct, ...), a local model folder, or a Hub id already in the "
        "local Hugging Face cache (or run once with network)."
    )
    if not recorded:
        raise InputError(Problem(f"this adapter does not name its base model. {fix}", file=str(config_file)))
    builtin = _builtin_of_folder(recorded)
    if builtin is not None:
        return builtin
    try:
        spec = resolve_model(recorded)
    except InputError as exc:
        raise InputError(
            Problem(
                f"the adapter's base model {recorded!r} (base_model_name_or_path) cannot be found: "
                f"{exc.problems[0].message} {fix}",
                file=str(config_file),
            )
        ) from exc
    if spec.on_hub and hub_offline() and not in_hub_cache(spec.path):
        raise InputError(
            Problem(
                f"the adapter's base model {recorded!r} (base_model_name_or_path) is a Hub id that is not in the "
                f"local Hugging Face cache, and HF_HUB_OFFLINE is set. {fix}",
                file=str(config_file),
            )
        )
    return recorded


def _builtin_of_folder(recorded: str) -> str | None:
    """The built-in model whose build folder PEFT recorded, when that folder is gone (another cache
    root, a cleared cache): the same recipe version rebuilds the same weights on first load."""
    if Path(recorded).expanduser().exists() or looks_like_hub_id(recorded):
        return None
    name = Path(recorded).name
    return next((builtin for builtin, recipe in BUILTIN_RECIPES.items() if recipe.folder_name == name), None)
