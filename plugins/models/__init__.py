"""Models: the registry of named models, the loaders for every format, the built-in models.

Importing this package is light (no torch, no transformers); the loaders import them when called.
"""

from plugins.models.builtin import BUILTIN_RECIPES, builtin_names, ensure_builtin
from plugins.models.chat_template import CHATML_TEMPLATE
from plugins.models.loaders import load_causal_lm, load_model, load_model_config, load_tokenizer
from plugins.models.package_file import PackageFile
from plugins.models.registry import (
    FORMATS,
    ModelSpec,
    RegistryEntry,
    list_models,
    read_registry_file,
    register_model,
    resolve_model,
)

__all__ = [
    "BUILTIN_RECIPES",
    "CHATML_TEMPLATE",
    "FORMATS",
    "ModelSpec",
    "PackageFile",
    "RegistryEntry",
    "builtin_names",
    "ensure_builtin",
    "list_models",
    "load_causal_lm",
    "load_model",
    "load_model_config",
    "load_tokenizer",
    "read_registry_file",
    "register_model",
    "resolve_model",
]
