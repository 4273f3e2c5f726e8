"""A step's ``memory:`` mapping: the memory keys its plugin uses -> the keys they have in the run's memory.

An entry maps a whole key (``training.memory_plan: sft.memory_plan``) or a prefix of whole
dot-separated segments (``dataset: preference`` maps ``dataset.train`` to ``preference.train``,
but not ``datasets.x``); the longest matching entry wins. The plugin never sees the mapping: it keeps
using its own key names, and the engine translates them on every memory access and declaration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

KEY_PATTERN = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")  # dot-separated segments, none empty


@dataclass(frozen=True, eq=False)
class KeyMap:
    entries: Mapping[str, str] = field(default_factory=dict)  # plugin key or prefix -> memory key or prefix

    def __call__(self, key: str) -> str:
        """``key`` as it is in memory."""
        entry = self.entry_for(key)
        return key if entry is None else self.entries[entry] + key[len(entry) :]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def entry_for(self, key: str) -> str | None:
        """The longest entry that is ``key`` or a whole-segment prefix of it; None when none is."""
        parts = key.split(".")
        for length in range(len(parts), 0, -1):
            prefix = ".".join(parts[:length])
            if prefix in self.entries:
                return prefix
        return None

    def matches(self, entry: str, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` that ``entry`` translates (a longer entry may take some of them)."""
        return [key for key in keys if self.entry_for(key) == entry]

    def describe(self) -> str:
        return ", ".join(f"{source} -> {target}" for source, target in self.entries.items())
