"""English text every Python installation carries, for the built-in tokenizer and pretraining.

Nothing is downloaded: the prose comes from the standard library's own docstrings (read as text,
never imported, so no module runs), the language reference topics that ``pydoc`` ships and
Python's licence. The fine-tuning data is deliberately not part of it, so that a fine-tune
on the built-in ``small`` starts from a base model that has never seen the task.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sysconfig
from functools import lru_cache
from pathlib import Path

_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_PROSE_CHARACTERS = set(" ,.;:'-()")
_SKIPPED_FOLDERS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
MIN_WORDS = 8
MIN_PROSE_RATIO = 0.93


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs of ``text`` that read as English sentences (no code, tables or doctests)."""
    paragraphs = []
    for block in _PARAGRAPH_BREAK.split(text):
        if block.startswith((" ", "\t")) or ">>>" in block:
            continue  # indented blocks are code samples
        line = " ".join(block.split())
        if len(line.split()) < MIN_WORDS:
            continue
        prose = sum(ch.isalpha() or ch in _PROSE_CHARACTERS for ch in line)
        if prose / len(line) >= MIN_PROSE_RATIO:
            paragraphs.append(line)
    return paragraphs


def _stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if not _SKIPPED_FOLDERS.intersection(p.relative_to(root).parts))


def _docstring_documents() -> list[str]:
    documents = []
    for source in _stdlib_sources():
        text = source.read_text(encoding="utf-8", errors="ignore")
        for match in _DOCSTRING.finditer(text):
            paragraphs = prose_paragraphs(inspect.cleandoc(match.group(1)))
            if paragraphs:
                documents.append("\n\n".join(paragraphs))
    return documents


def _reference_documents() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions split pydoc_data into another package
        return []
    return ["\n\n".join(p) for key in sorted(topics) if (p := prose_paragraphs(topics[key]))]


def _licence_documents() -> list[str]:
    licence = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if not licence.is_file():
        return []
    paragraphs = prose_paragraphs(licence.read_text(encoding="utf-8", errors="ignore"))
    return ["\n\n".join(paragraphs)] if paragraphs else []


@lru_cache(maxsize=1)
def _collect() -> tuple[str, ...]:
    seen: set[str] = set()
    documents = []
    for document in _reference_documents() + _docstring_documents() + _licence_documents():
        if document not in seen:
            seen.add(document)
            documents.append(document)
    return tuple(documents)


def pretraining_documents() -> list[str]:
    """The corpus as a list of documents, in a fixed order (same Python version -> same list)."""
    return list(_collect())


def corpus_fingerprint(documents: list[str]) -> str:
    """A short hash recorded with each built model, so a build can be traced to its text."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]
