"""Upload export folders to the Hugging Face Hub. The token comes from the environment (HF_TOKEN)
or a stored ``hf auth login``; it is never printed, logged or put in memory."""

from __future__ import annotations

import os
from pathlib import Path

from entity_training import ConfigError, PluginError, Problem

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def hub_token() -> str | None:
    for name in TOKEN_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # an unreadable stored token is the same as none
        return None


def check_hub_ready(hub_model_id: str | None) -> None:
    """Pre-flight for push_to_hub: a repository id and a token, before any export work."""
    problems = []
    if not hub_model_id:
        problems.append(
            Problem(
                "push_to_hub is true but hub_model_id is not set; give it as 'user/model-name'.", path="hub_model_id"
            )
        )
    elif hub_model_id.count("/") != 1:
        problems.append(
            Problem(f"hub_model_id {hub_model_id!r} must look like 'user/model-name'.", path="hub_model_id")
        )
    if hub_token() is None:
        problems.append(
            Problem(
                "push_to_hub is true but no Hugging Face token was found. Set the HF_TOKEN environment "
                "variable (a token with write access from https://huggingface.co/settings/tokens) or run "
                "'hf auth login', or set push_to_hub: false.",
                path="push_to_hub",
            )
        )
    if problems:
        raise ConfigError(problems)


def push_folder(folder: Path, hub_model_id: str, *, private: bool, path_in_repo: str | None = None) -> str:
    """Create the repository if needed and upload ``folder``; return the repository URL."""
    from huggingface_hub import HfApi

    token = hub_token()
    api = HfApi()
    try:
        url = api.create_repo(hub_model_id, token=token, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=hub_model_id,
            folder_path=str(folder),
            path_in_repo=path_in_repo,
            token=token,
            commit_message=f"Upload {path_in_repo or folder.name} from entity-training",
        )
    except Exception as exc:  # network, auth and quota errors all end the push the same way
        raise PluginError(
            f"could not upload {folder.name} to the Hugging Face Hub repository {hub_model_id!r}: "
            f"{type(exc).__name__}: {_without_token(str(exc), token)[:400]}. Check the network connection and "
            "that the token has write access; the local export is complete and kept."
        ) from None
    return str(url)


def _without_token(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
