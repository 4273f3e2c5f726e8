"""What can be told about the Hugging Face Hub without importing its client (which is slow to import)."""

from __future__ import annotations

import os
from pathlib import Path


def hub_offline() -> bool:
    """Whether the user told the Hugging Face libraries not to use the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """The Hub's download cache, found the way huggingface_hub finds it."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def in_hub_cache(repo_id: str) -> bool:
    """Whether a snapshot of model ``repo_id`` with its config was downloaded before."""
    snapshots = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any((snapshot / "config.json").is_file() for snapshot in snapshots.iterdir())
