"""Load a resolved model's config, tokenizer and weights, whatever its format.

Every loader accepts what ``resolve_model`` accepts. Weights load through safetensors; pickle
checkpoints (``.bin``, ``.pt``) are refused unless ``allow_pickle=True``, because unpickling runs
code stored in the file. Remote code is never run unless ``trust_remote_code=True``. A GGUF file
is loaded as the Hugging Face folder converted from it once (``gguf_source.py``); only
``load_model_config`` reads the GGUF itself (its metadata). A built-in model is built on its
first load; ``load_model_config`` takes its config from its recipe. Problems with the user's model
(missing files, unknown architectures, no network) become InputError.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from entity_training import InputError, Problem
from plugins.models.hub import hub_offline
from plugins.models.registry import PICKLE_SUFFIXES, ModelSpec, resolve_model

PICKLE_REFUSED = (
    "{what} is a pickle checkpoint. Unpickling can run arbitrary code stored in the file, so it is "
    "refused by default. Convert it to .safetensors, or set allow_pickle: true in training_config "
    "if you trust where it came from."
)

_NO_TOKENIZER = (
    "this model folder has no tokenizer files (tokenizer.json or tokenizer_config.json, tokenizer.model, "
    "vocab.json). Copy them from the model these weights were trained from (or save the tokenizer there "
    "with tokenizer.save_pretrained(folder))."
)

# Any one of these makes a folder's tokenizer loadable (fast, sentencepiece, BPE or WordPiece files).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
)


def check_model_files(name_or_path: str | os.PathLike, *, allow_pickle: bool = False) -> None:
    """Refuse, before anything heavy runs, weights that only pickle can read and a missing tokenizer."""
    spec = resolve_model(name_or_path)
    _refuse_pickle(spec, allow_pickle)
    # A GGUF file carries its tokenizer; a built-in is built with one.
    if not spec.on_hub and spec.format not in ("gguf", "builtin") and not _has_tokenizer_files(spec):
        raise InputError(Problem(_NO_TOKENIZER, file=spec.folder))


def load_model_config(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """The model's ``PretrainedConfig`` (architecture, sizes), without loading any weights."""
    from transformers import AutoConfig

    spec = resolve_model(name_or_path)
    if spec.recipe is not None:
        from plugins.models.builtin import BUILTIN_RECIPES, llama_config

        return llama_config(BUILTIN_RECIPES[spec.recipe])
    _check_architecture(spec, trust_remote_code)
    if spec.format in ("safetensors", "pickle") and not (Path(spec.folder) / "config.json").is_file():
        raise InputError(
            Problem(
                "a single weights file needs the model's config.json (and tokenizer files) in the same "
                "folder; copy them from the model it was trained from.",
                file=spec.path,
            )
        )
    with _user_errors(spec):
        if spec.format == "gguf":
            return AutoConfig.from_pretrained(spec.folder, gguf_file=Path(spec.path).name)
        return AutoConfig.from_pretrained(spec.folder, trust_remote_code=trust_remote_code)


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """The model's tokenizer, always with a pad token, and the registry's chat template if it sets one."""
    from transformers import AutoTokenizer

    spec = _loadable(resolve_model(name_or_path))
    with _user_errors(spec, what="tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(spec.folder, trust_remote_code=trust_remote_code)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so any existing token will do.
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise InputError(
                Problem(
                    "the tokenizer has no pad, end-of-sequence or unknown token to pad batches with; add a "
                    "pad_token to its tokenizer_config.json.",
                    file=spec.folder,
                )
            )
        tokenizer.pad_token = fallback
    return tokenizer


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    dtype: Any = None,
    quantization_config: Any = None,
    device_map: Any = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    attn_implementation: str | None = "sdpa",
):
    """The model's weights as a ``PreTrainedModel`` for causal LM.

    ``dtype=None`` keeps the checkpoint's own dtype (float32 for a GGUF file, which is dequantized).
    """
    from transformers import AutoModelForCausalLM

    spec = _loadable(resolve_model(name_or_path))
    _check_architecture(spec, trust_remote_code)
    _refuse_pickle(spec, allow_pickle)
    options: dict[str, Any] = {
        "dtype": dtype if dtype is not None else "auto",
        "quantization_config": quantization_config,
        "device_map": device_map,
        "trust_remote_code": trust_remote_code,
        "attn_implementation": attn_implementation,
    }
    with _user_errors(spec):
        if spec.format == "safetensors":
            config = load_model_config(spec.path, trust_remote_code=trust_remote_code)
            config.transformers_weights = Path(spec.path).name
            return AutoModelForCausalLM.from_pretrained(spec.folder, config=config, **options)
        if spec.format == "pickle":
            return _load_pickle_file(spec, options)
        return AutoModelForCausalLM.from_pretrained(
            spec.path, use_safetensors=None if allow_pickle else True, **options
        )


def load_model(name: str | os.PathLike, **options: Any):
    """``(model, tokenizer)`` for a registry name, path or Hub id; ``options`` go to ``load_causal_lm``."""
    trust = options.get("trust_remote_code", False)
    return load_causal_lm(name, **options), load_tokenizer(name, trust_remote_code=trust)


def user_model_options(training_config: Any) -> dict[str, bool]:
    """The loading permissions the user gave in training_config (a ``ResolvedTrainingConfig``, or None
    when the workflow has none), for every later load of their model."""
    return {
        "trust_remote_code": bool(training_config and training_config.trust_remote_code),
        "allow_pickle": bool(training_config and training_config.allow_pickle),
    }


def _loadable(spec: ModelSpec) -> ModelSpec:
    """A built-in as its folder (built on first use), a GGUF file as the Hugging Face folder
    converted from it (on first use); any other model as it is."""
    if spec.recipe is not None:
        from plugins.models.builtin import ensure_builtin

        return replace(spec, path=str(ensure_builtin(spec.recipe)), format="hf")
    if spec.format != "gguf":
        return spec
    from plugins.models.gguf_source import ensure_hf_folder

    with _user_errors(spec):
        folder = ensure_hf_folder(spec.path, license=spec.license)
    return replace(spec, path=str(folder), format="hf")


def _refuse_pickle(spec: ModelSpec, allow_pickle: bool) -> None:
    # A Hub download is kept to safetensors by use_safetensors=True, and fails with its own message.
    if allow_pickle or spec.on_hub:
        return
    if spec.format == "pickle":
        raise InputError(Problem(PICKLE_REFUSED.format(what=f"This {Path(spec.path).suffix} file"), file=spec.path))
    if _holds_only_pickle(Path(spec.path)):
        raise InputError(Problem(PICKLE_REFUSED.format(what="This folder's model"), file=spec.path))


def _load_pickle_file(spec: ModelSpec, options: dict[str, Any]):
    import torch
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    config = load_model_config(spec.path, trust_remote_code=options["trust_remote_code"])
    # weights_only keeps the unpickler to tensors and containers even when pickle is allowed.
    state_dict = torch.load(spec.path, map_location="cpu", weights_only=True)
    # The Auto class cannot take a bare state_dict, the concrete class can.
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    return model_class.from_pretrained(None, config=config, state_dict=state_dict, **options)


def _holds_only_pickle(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    names = [p.name for p in folder.iterdir()]
    has_safetensors = any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names)
    has_pickle = any(n.endswith(PICKLE_SUFFIXES) and not n.startswith("training_args") for n in names)
    return has_pickle and not has_safetensors


def _check_architecture(spec: ModelSpec, trust_remote_code: bool) -> None:
    """Refuse, before loading anything, an architecture this transformers cannot build."""
    from transformers import CONFIG_MAPPING, __version__

    config_file = Path(spec.folder) / "config.json"
    if spec.on_hub or spec.format == "gguf" or not config_file.is_file():
        return
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports an unreadable config.json itself
    if not isinstance(config, dict):
        return
    model_type = config.get("model_type")
    if config.get("auto_map") and not trust_remote_code:
        raise InputError(
            Problem(
                f"this model (model_type {model_type!r}) ships its own Python code, which runs only with "
                "trust_remote_code: true. Read that code first; set it only for a source you trust.",
                file=str(config_file),
            )
        )
    if model_type and model_type not in CONFIG_MAPPING and not config.get("auto_map"):
        raise InputError(
            Problem(
                f"transformers {__version__} cannot load model_type {model_type!r}. Upgrade transformers "
                "(pip install -U transformers) if a newer release supports it, or convert the model to an "
                "architecture it knows.",
                file=str(config_file),
            )
        )


@contextlib.contextmanager
def _user_errors(spec: ModelSpec, what: str = "model") -> Iterator[None]:
    """Turn the library's errors about the user's model into InputError with a way forward."""
    try:
        yield
    except InputError:
        raise
    except OSError as exc:
        raise InputError(Problem(_os_error_message(spec, what, exc), file=None if spec.on_hub else spec.path)) from exc
    except (ValueError, KeyError) as exc:
        text = str(exc)
        if what == "tokenizer" and not spec.on_hub:
            raise InputError(
                Problem(
                    f"cannot load the tokenizer from this location ({_first_line(text)}). "
                    + ("" if _has_tokenizer_files(spec) else _NO_TOKENIZER),
                    file=spec.folder,
                )
            ) from exc
        if "does not recognize this architecture" in text or "model type" in text or isinstance(exc, KeyError):
            raise InputError(
                Problem(
                    f"transformers cannot load {spec.name!r}: {_first_line(text)}. Upgrade transformers or use "
                    "a supported architecture.",
                    file=None if spec.on_hub else spec.path,
                )
            ) from exc
        raise


def _os_error_message(spec: ModelSpec, what: str, exc: OSError) -> str:
    reason = _first_line(str(exc))
    other_way = f" Or {spec.install_hint}." if spec.install_hint else ""
    if spec.on_hub and "safetensors" in reason:
        return PICKLE_REFUSED.format(what=f"{spec.path!r} has no .safetensors weights; its") + f" ({reason})"
    if spec.on_hub and hub_offline():
        return (
            f"HF_HUB_OFFLINE is set and the {what} {spec.path!r} is not in the local Hugging Face cache "
            f"({reason}). Download it once with network, or give its local folder path instead "
            "(model_name_or_path: /path/to/folder)." + other_way
        )
    if spec.on_hub:
        return (
            f"could not fetch the {what} {spec.path!r} from the Hugging Face Hub ({reason}). Check the id and "
            "the network; offline, download it elsewhere and give its local folder path instead "
            "(model_name_or_path: /path/to/folder), and set HF_HUB_OFFLINE=1 to skip the download attempts." + other_way
        )
    if spec.format == "safetensors":
        return (
            f"cannot load the {what} of this .safetensors file ({reason}). Put the model's config.json and "
            "tokenizer files (tokenizer.json, tokenizer_config.json) in the same folder."
        )
    return f"cannot load the {what} from this location ({reason}). Is the folder complete?"


def _has_tokenizer_files(spec: ModelSpec) -> bool:
    return any((Path(spec.folder) / name).is_file() for name in TOKENIZER_FILES)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"
