"""Tokenizer metadata for GGUF: tokens, token types, merges, special ids and the pre-tokenizer.

Only byte-level BPE tokenizers (``tokenizer.ggml.model = "gpt2"``) are supported; SentencePiece
vocabularies need scores and a different model type and are refused clearly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from entity_training import ConfigError, Problem

# llama.cpp picks its pre-tokenizer regex from ``tokenizer.ggml.pre``; a wrong value makes it
# split text differently from the HF tokenizer without any error. These fragments tell apart the
# regexes of the pre-tokenizers llama.cpp knows.
_LLAMA3_DIGITS = r"\p{N}{1,3}"
_QWEN2_FRAGMENT = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5


@dataclass
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int] = field(default_factory=dict)  # bos/eos/pad/unk -> id
    add_bos: bool = False
    add_eos: bool = False


def build_gguf_vocab(tokenizer: Any, vocab_size: int, *, pre_tokenizer: str | None = None) -> GGUFVocab:
    """Read everything llama.cpp needs from a fast HF tokenizer, padded to ``vocab_size`` entries."""
    spec = _tokenizer_json(tokenizer)
    model = spec.get("model", {})
    if model.get("type") != "BPE" or not _is_byte_level(spec):
        raise ConfigError(
            Problem(
                f"GGUF export supports byte-level BPE tokenizers only; this one is {model.get('type', '?')} "
                "without a ByteLevel pre-tokenizer (SentencePiece-style). Export with export_formats "
                "[huggingface, merged] and convert with llama.cpp's convert_hf_to_gguf.py.",
                path="export_formats",
            )
        )
    vocab = tokenizer.get_vocab()
    added = spec.get("added_tokens", [])
    special_added = {t["content"] for t in added if t.get("special")}
    plain_added = {t["content"] for t in added if not t.get("special")}
    by_id = {i: tok for tok, i in vocab.items()}
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(TOKEN_UNUSED)
        else:
            tokens.append(token)
            types.append(
                TOKEN_CONTROL
                if token in special_added
                else TOKEN_USER_DEFINED
                if token in plain_added
                else TOKEN_NORMAL
            )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return GGUFVocab(
        tokens=tokens,
        token_types=types,
        merges=merges,
        pre=pre_tokenizer or detect_pre_tokenizer(spec),
        special_ids=_special_ids(tokenizer),
        add_bos=adds_bos_token(tokenizer),
        add_eos=_adds_eos_token(tokenizer),
    )


def detect_pre_tokenizer(spec: dict) -> str:
    """Map the HF pre-tokenizer to llama.cpp's name, or refuse (the user can override it)."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    patterns = [s.get("pattern", {}).get("Regex", "") for s in steps if s.get("type") == "Split"]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if not patterns and byte_level and byte_level[0].get("use_regex", True):
        return "gpt-2"
    if len(patterns) == 1 and _LLAMA3_DIGITS in patterns[0]:
        return "llama-bpe"
    if len(patterns) == 1 and _QWEN2_FRAGMENT in patterns[0]:
        return "qwen2"
    raise ConfigError(
        Problem(
            "cannot tell which llama.cpp pre-tokenizer matches this tokenizer's pre_tokenizer "
            f"({json.dumps(pre)[:200]}). Set gguf_pre_tokenizer to llama.cpp's name for it (e.g. "
            "gpt-2, llama-bpe, qwen2); a wrong value makes llama.cpp tokenize differently.",
            path="gguf_pre_tokenizer",
        )
    )


def adds_bos_token(tokenizer: Any) -> bool:
    """Whether encoding plain text prepends BOS, as training saw it (llama.cpp must do the same)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def _adds_eos_token(tokenizer: Any) -> bool:
    eos = tokenizer.eos_token_id
    ids = tokenizer("a")["input_ids"]
    return eos is not None and bool(ids) and ids[-1] == eos


def _special_ids(tokenizer: Any) -> dict[str, int]:
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id,
    }
    return {k: int(v) for k, v in ids.items() if v is not None}


def _tokenizer_json(tokenizer: Any) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ConfigError(
            Problem(
                f"GGUF export needs a fast (tokenizers-backed) tokenizer; got {type(tokenizer).__name__}.",
                path="export_formats",
            )
        )
    return json.loads(backend.to_str())


def _is_byte_level(spec: dict) -> bool:
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    return any(s.get("type") == "ByteLevel" for s in steps) or (spec.get("decoder") or {}).get("type") == "ByteLevel"
