"""The tokenizer's part of the cache key: its vocabulary and merges, special tokens and pipeline.

Hashing the whole vocabulary serialises the backend tokenizer (milliseconds, most of a cache hit).
A tokenizer loaded from a local folder is hashed once per state of its files instead: the digest
is remembered under the files' (name, size, mtime, ctime, inode), as recorded right after loading,
together with everything that can change in memory after loading (added tokens, special tokens,
the pre-/post-processing pipeline). Any change of a file, or a tokenizer without files (built in
memory), means hashing by content.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entity_training.memory import atomic_write_text
from plugins.data.load_cache import RACY_WINDOW_NS

MEMO_FILE = "tokenizer-digests.json"
MEMO_LIMIT = 64  # remembered file states; the oldest are forgotten first


@dataclass(frozen=True)
class TokenizerFiles:
    """The files of a tokenizer's folder as they were when it was loaded."""

    folder: str
    files: tuple[tuple[str, int, int, int, int], ...]  # (name, size, mtime_ns, ctime_ns, inode)


def source_files(tokenizer: Any, loading_started_ns: int) -> TokenizerFiles | None:
    """The files ``tokenizer`` was loaded from, or None when they cannot vouch for its content.

    Call right after loading. None when it did not come from a local folder, or when a file changed
    shortly before or during loading (its ctime, which nothing can set back, is not clearly older
    than the start of loading), so the tokenizer may hold another version than the files now do.
    """
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    folder = Path(name)
    if not name or not folder.is_dir():
        return None
    files = []
    for path in sorted(folder.iterdir()):
        try:
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            continue
        if stat.st_ctime_ns + RACY_WINDOW_NS >= loading_started_ns:
            return None
        files.append((path.name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
    return TokenizerFiles(str(folder.resolve()), tuple(files))


def tokenizer_digest(
    tokenizer: Any, chat_template: str, *, files: TokenizerFiles | None = None, memo_dir: Path | None = None
) -> str:
    """Hash of the tokenizer's identity: vocabulary and merges, special and added tokens, pipeline, template."""
    state = _mutable_state(tokenizer)
    if files is not None and memo_dir is not None:
        vocabulary = _memoised_vocabulary_digest(tokenizer, files, state, memo_dir)
    else:
        vocabulary = vocabulary_digest(tokenizer)
    payload = json.dumps([vocabulary, state, chat_template], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def vocabulary_digest(tokenizer: Any) -> str:
    """Hash of the whole backend tokenizer (vocabulary, merges, added tokens, pipeline): the slow part."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(vocabulary.encode()).hexdigest()


def _mutable_state(tokenizer: Any) -> dict[str, Any]:
    """What code can change on a loaded tokenizer without touching its files (cheap to read)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pipeline = {}
    if backend is not None:
        for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
            component = getattr(backend, part)
            pipeline[part] = component.__getstate__().decode() if component is not None else None
        pipeline |= {"padding": backend.padding, "truncation": backend.truncation}
        pipeline["vocab_size"] = backend.get_vocab_size(with_added_tokens=True)
    return {
        "class": type(tokenizer).__qualname__,
        "length": len(tokenizer),
        "special": {
            name: str(getattr(tokenizer, name, None)) for name in ("bos_token", "eos_token", "pad_token", "unk_token")
        },
        "added": {str(index): str(token) for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()},
        "pipeline": pipeline,
    }


def _memoised_vocabulary_digest(tokenizer: Any, files: TokenizerFiles, state: dict[str, Any], memo_dir: Path) -> str:
    import tokenizers
    import transformers

    # The libraries' versions are part of the state: they decide how the same files load.
    memo_key = hashlib.sha256(
        json.dumps(
            [transformers.__version__, tokenizers.__version__, files.folder, files.files, state], sort_keys=True
        ).encode()
    ).hexdigest()
    memo = _read_memo(memo_dir)
    known = memo.get(memo_key)
    if isinstance(known, dict) and isinstance(known.get("digest"), str):
        return known["digest"]
    digest = vocabulary_digest(tokenizer)
    memo[memo_key] = {"digest": digest, "recorded_ns": time.time_ns()}
    newest = sorted(memo.items(), key=lambda item: item[1].get("recorded_ns", 0) if isinstance(item[1], dict) else 0)
    try:
        atomic_write_text(memo_dir / MEMO_FILE, json.dumps(dict(newest[-MEMO_LIMIT:])))
    except OSError:  # a read-only cache only loses the shortcut
        pass
    return digest


def _read_memo(memo_dir: Path) -> dict[str, Any]:
    try:
        memo = json.loads((memo_dir / MEMO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}
