"""Conversation lists that know their content digest, so the tokenized cache key need not hash them.

The loader knows what it loaded: the parse cache's key covers every file's bytes and the loader
settings. A list loaded that way carries ``loaded:<key>``; a selection of it (shuffle, max_samples,
the split) carries a digest of that key and the selected positions. Changing the list itself
(append, assignment, sort, ...) drops the digest, and a new list has none, so the key then hashes
the content. The rows are shared, not copied, so a row edited in place would keep the old digest:
data_preparation therefore trusts the digest only while no other plugin has recalled the list
(``PluginContext.recalled_by_others``) and hashes the content otherwise.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

_LIST_MUTATORS = (
    "append",
    "extend",
    "insert",
    "remove",
    "pop",
    "clear",
    "sort",
    "reverse",
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
)


class DigestedConversations(list):
    """A list of conversations plus ``digest``: a hash that changes whenever the content can differ."""

    def __init__(self, conversations: Iterable[dict[str, Any]] = (), digest: str | None = None):
        super().__init__(conversations)
        self.digest = digest


def _forgetting_digest(name: str):
    method = getattr(list, name)

    def mutate(self: DigestedConversations, *args: Any, **kwargs: Any) -> Any:
        self.digest = None
        return method(self, *args, **kwargs)

    mutate.__name__ = name
    return mutate


for _name in _LIST_MUTATORS:
    setattr(DigestedConversations, _name, _forgetting_digest(_name))


def known_digest(conversations: Sequence[dict[str, Any]]) -> str | None:
    return conversations.digest if isinstance(conversations, DigestedConversations) else None


def select(conversations: Sequence[dict[str, Any]], indices: Sequence[int]) -> list[dict[str, Any]]:
    """The conversations at ``indices``, in that order; keeps a digest when the source has one."""
    picked = [conversations[i] for i in indices]
    parent = known_digest(conversations)
    if parent is None:
        return picked
    positions = hashlib.sha256(parent.encode())
    positions.update(array("q", indices).tobytes())
    return DigestedConversations(picked, f"selected:{positions.hexdigest()}")
