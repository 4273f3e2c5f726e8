"""Named models and the resolution of whatever the user wrote as a model.

A model can be given as a registry name (``configs/models.yaml``, the built-ins, or one added
with ``register_model``), a local path (a Hugging Face folder, a ``.safetensors`` or ``.gguf``
file) or a Hugging Face Hub id (``org/name``). ``resolve_model`` turns any of them into a
``ModelSpec`` that says where the files are and in which format; it imports nothing heavy.
A registry entry may also name a model file shipped in a pip package (``package_file``), used
instead of its ``path`` whenever that package is installed, so that the model works offline.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from entity_training import InputError, Problem
from entity_training.yaml_source import load_yaml_file
from plugins.models.builtin import BUILTIN_RECIPES, builtin_folder
from plugins.models.hub import hub_offline, in_hub_cache
from plugins.models.package_file import PackageFile, installed_file

ModelFormat = Literal["builtin", "hf", "safetensors", "gguf", "bitnet", "pickle"]
FORMATS: tuple[str, ...] = get_args(ModelFormat)
DEFAULT_REGISTRY_FILE = Path(__file__).resolve().parents[2] / "configs" / "models.yaml"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class RegistryEntry(BaseModel):
    """One named model of the registry, as written in models.yaml."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="Where the model is: a folder or file (relative paths are relative to the registry "
        "file), a Hub id, or for built-ins the recipe name."
    )
    format: ModelFormat = Field(description="How to load it: builtin, hf, safetensors, gguf, bitnet or pickle.")
    size_params: int | None = Field(None, gt=0, description="Number of parameters, for listings and memory plans.")
    chat_template: str | None = Field(
        None, description="A Jinja chat template that replaces the one shipped with the tokenizer."
    )
    description: str | None = Field(None, description="One line shown by model listings.")
    license: str | None = Field(
        None, description="The model's licence (a Hugging Face licence id such as apache-2.0), for model cards."
    )
    package_file: PackageFile | None = Field(
        None,
        description="A model file inside an installed pip package (distribution, file, version), used instead "
        "of path whenever that package is installed.",
    )

    @model_validator(mode="after")
    def _builtin_recipe_exists(self) -> RegistryEntry:
        if self.format == "builtin" and self.path not in BUILTIN_RECIPES:
            raise ValueError(f"no built-in model {self.path!r}; built-ins: {', '.join(BUILTIN_RECIPES)}")
        return self


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: what the loaders need to open it."""

    name: str  # the registry name, or the path / Hub id as the user wrote it
    path: str  # a local folder or file, or a Hub id
    format: ModelFormat
    source: Literal["registry", "path", "hub"]
    size_params: int | None = None
    chat_template: str | None = None
    license: str | None = None  # as the registry states it
    on_hub: bool = False  # path is a Hub id, downloaded by the loaders
    install_hint: str | None = None  # how to get the model without the Hub, for error messages
    recipe: str | None = None  # a built-in's recipe: its folder is built by the loaders on first load

    @property
    def is_file(self) -> bool:
        return self.format in ("safetensors", "gguf", "pickle")

    @property
    def folder(self) -> str:
        """The folder holding config and tokenizer files (a file's parent folder)."""
        return str(Path(self.path).parent) if self.is_file else self.path


_registered: dict[str, RegistryEntry] = {}


def _builtin_entries() -> dict[str, RegistryEntry]:
    return {
        name: RegistryEntry(path=name, format="builtin", description=recipe.description)
        for name, recipe in BUILTIN_RECIPES.items()
    }


def read_registry_file(path: Path) -> dict[str, RegistryEntry]:
    """The entries of a models.yaml (``models: {name: {path, format, ...}}``), every problem at once."""
    data, source = load_yaml_file(Path(path))
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise InputError(source.problem("expected a top-level `models:` mapping of name -> {path, format}", ()))
    entries: dict[str, RegistryEntry] = {}
    problems: list[Problem] = []
    for name, raw in models.items():
        try:
            entry = RegistryEntry.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                hint = f" (formats: {', '.join(FORMATS)})" if "format" in error["loc"] else ""
                problems.append(source.problem(error["msg"] + hint, ("models", name, *error["loc"])))
            continue
        if entry.format != "builtin" and not _is_absolute_or_hub(entry.path):
            entry = entry.model_copy(update={"path": str((Path(path).parent / entry.path).resolve())})
        entries[str(name)] = entry
    if problems:
        raise InputError(problems, title=f"{len(problems)} problems in the model registry {path}")
    return entries


def _is_absolute_or_hub(path: str) -> bool:
    expanded = Path(path).expanduser()
    return expanded.is_absolute() or (looks_like_hub_id(path) and not expanded.exists())


def list_models(registry_file: Path | None = None) -> dict[str, RegistryEntry]:
    """Every named model: built-ins, then the registry file, then ``register_model`` calls."""
    file = Path(registry_file) if registry_file else DEFAULT_REGISTRY_FILE
    entries = _builtin_entries()
    if file.is_file():
        entries.update(read_registry_file(file))
    entries.update(_registered)
    return dict(sorted(entries.items()))


def register_model(
    name: str,
    path: str | os.PathLike,
    format: ModelFormat,
    size_params: int | None = None,
    chat_template: str | None = None,
    *,
    description: str | None = None,
    license: str | None = None,
    package_file: PackageFile | dict | None = None,
    registry_file: Path | None = None,
) -> RegistryEntry:
    """Add a named model for this process; with ``registry_file``, also write it to that YAML file."""
    try:
        entry = RegistryEntry(
            path=str(path),
            format=format,
            size_params=size_params,
            chat_template=chat_template,
            description=description,
            license=license,
            package_file=package_file,
        )
    except ValidationError as exc:
        raise InputError(
            [Problem(f"register_model({name!r}): {e['msg']}", path=".".join(map(str, e["loc"]))) for e in exc.errors()]
        ) from exc
    _registered[name] = entry
    if registry_file is not None:
        _write_entry(Path(registry_file), name, entry)
    return entry


def _write_entry(file: Path, name: str, entry: RegistryEntry) -> None:
    data = yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else None
    data = data if isinstance(data, dict) else {}
    models = data.setdefault("models", {})
    models[name] = entry.model_dump(exclude_none=True)
    file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=file.parent, suffix=".tmp", delete=False, encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False, allow_unicode=True)
    os.replace(handle.name, file)


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.startswith(".")


def detect_format(path: Path) -> ModelFormat:
    """The format of a local model folder or file, from its files (never by loading weights)."""
    if path.is_dir():
        config_file = path / "config.json"
        adapter_file = path / "adapter_config.json"
        if adapter_file.is_file() and not config_file.is_file():
            base = _read_json(adapter_file).get("base_model_name_or_path", "its base model")
            raise InputError(
                Problem(
                    f"this folder holds a LoRA adapter, not a whole model. Load the base model ({base}) and "
                    "apply the adapter with PEFT, or point at a merged export of it (training_config's "
                    "model_name_or_path takes the adapter folder itself: training continues it on its base).",
                    file=str(path),
                )
            )
        if not config_file.is_file():
            raise InputError(
                Problem(
                    "this folder has no config.json, so it is not a Hugging Face model folder. Point at the "
                    "folder that holds config.json and the weights, at a .safetensors or .gguf file, or (to "
                    "continue training an adapter) at a PEFT adapter folder with adapter_config.json.",
                    file=str(path),
                )
            )
        return "bitnet" if _is_bitnet(_read_json(config_file)) else "hf"
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".gguf":
        return "gguf"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    raise InputError(
        Problem(
            f"cannot load a model from a {suffix or 'suffix-less'} file. Give a Hugging Face folder, a "
            ".safetensors file (with config.json beside it) or a .gguf file.",
            file=str(path),
        )
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            Problem(f"cannot read this JSON file ({exc}); is the download complete?", file=str(path))
        ) from exc
    return data if isinstance(data, dict) else {}


def _is_bitnet(config: dict) -> bool:
    quantization = config.get("quantization_config") or {}
    return config.get("model_type") == "bitnet" or quantization.get("quant_method") == "bitnet"


def resolve_model(name_or_path: str | os.PathLike) -> ModelSpec:
    """Turn a registry name, a local path or a Hub id into a ``ModelSpec``; builds and converts nothing.

    A built-in model's spec points at the cache folder it is built into on first load. Raises
    InputError, listing the registry names, for anything else.
    """
    text = str(name_or_path).strip()
    entries = list_models()
    if text in entries:
        entry = entries[text]
        if entry.format == "builtin":
            folder = str(builtin_folder(entry.path))
            return ModelSpec(
                text, folder, "builtin", "registry", entry.size_params, entry.chat_template, recipe=entry.path
            )
        spec = _resolve_entry_location(text, entry)
        return replace(
            spec,
            name=text,
            source="registry",
            size_params=entry.size_params,
            chat_template=entry.chat_template,
            license=entry.license,
        )
    return _resolve_location(text, declared=None, known=entries)


def _resolve_entry_location(name: str, entry: RegistryEntry) -> ModelSpec:
    package = entry.package_file
    if package is None:
        return _resolve_location(entry.path, declared=entry.format)
    shipped = installed_file(package)
    if shipped is not None:
        return _resolve_location(str(shipped), declared=None)
    hint = f"install it with `{package.install_command}`"
    if looks_like_hub_id(entry.path) and hub_offline() and not in_hub_cache(entry.path):
        raise InputError(
            Problem(
                f"{name!r} needs the package {package.distribution}, which is not installed, and HF_HUB_OFFLINE "
                f"is set, so it cannot be downloaded from the Hub ({entry.path}) either. Offline, {hint}, or "
                "give a local folder of the model instead (model_name_or_path: /path/to/folder).",
                path="model_name_or_path",
            )
        )
    return replace(_resolve_location(entry.path, declared=entry.format), install_hint=hint)


def _resolve_location(text: str, *, declared: ModelFormat | None, known: dict | None = None) -> ModelSpec:
    path = Path(text).expanduser()
    if path.exists():
        detected = detect_format(path)
        fmt = "bitnet" if declared == "bitnet" and detected == "hf" else detected
        return ModelSpec(text, str(path.resolve()), fmt, "path")
    if looks_like_hub_id(text):
        return ModelSpec(text, text, declared if declared in ("hf", "bitnet") else "hf", "hub", on_hub=True)
    names = ", ".join(known or list_models())
    if known is None:
        message = f"the registry points at {text!r}, which does not exist; fix its path in the registry file."
    elif _looks_like_path(text):
        message = f"{text!r} does not exist. Check the path, or use a registry name: {names}."
    else:
        message = f"unknown model {text!r}. Use a registry name ({names}), a local path or a Hub id (org/name)."
    raise InputError(Problem(message, path="model_name_or_path"))


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or text.startswith((".", "~"))
        or Path(text).suffix.lower() in (".safetensors", ".gguf", *PICKLE_SUFFIXES)
    )
