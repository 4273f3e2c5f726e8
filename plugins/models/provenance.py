"""What a base model is called and under which licence, for the model cards of what is trained on it.

Looked up without loading anything: the registry entry, the ``source.json`` of a folder converted
from a GGUF (which names the original file), a folder's README front matter or config, a GGUF
file's ``general.license``. A Hub id is not looked up (no network); its licence is then unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from plugins.models.registry import list_models


@dataclass(frozen=True)
class BaseModelProvenance:
    name: str  # the registry name, the original GGUF file, or the path / Hub id as given
    license: str | None  # a Hugging Face licence id; None when nothing states it


def base_model_provenance(base_model: str) -> BaseModelProvenance:
    entry = list_models().get(base_model)
    if entry is not None:
        located = _located(entry.path)
        return BaseModelProvenance(base_model, entry.license or (located.license if located else None))
    return _located(base_model) or BaseModelProvenance(base_model, None)


def _located(location: str) -> BaseModelProvenance | None:
    path = Path(location).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        from plugins.models.gguf_source import gguf_fields

        return BaseModelProvenance(location, gguf_fields(path, "general.license")["general.license"])
    if not path.is_dir():
        return None
    from plugins.models.gguf_source import read_source_note

    note = read_source_note(path)
    if note is not None:
        return BaseModelProvenance(str(note.get("original_path") or location), note.get("license"))
    return BaseModelProvenance(location, _readme_license(path / "README.md") or _config_license(path / "config.json"))


def _readme_license(readme: Path) -> str | None:
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    front_matter = text[3:].split("\n---", 1)[0]
    try:
        data = yaml.safe_load(front_matter)
    except yaml.YAMLError:
        return None
    return _text(data.get("license")) if isinstance(data, dict) else None


def _config_license(config: Path) -> str | None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _text(data.get("license")) if isinstance(data, dict) else None


def _text(value: object) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and str(value).strip() else None
