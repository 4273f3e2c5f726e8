"""Show tokenized samples with the trained tokens highlighted and the masked ones dimmed.

The tool to reach for when a fine-tune learns the wrong thing: it shows exactly which tokens
carry loss. Used by ``entity-train preview CONFIG [--n 3]``.
"""

from __future__ import annotations

from typing import Any

from plugins.data.encoding import IGNORE_INDEX
from plugins.data.preference_tokenized import PARTS, load_preference_split
from plugins.data.tokenized import load_tokenized

TRAINED_STYLE = "bold green"
MASKED_STYLE = "dim"


def print_preview(tokenized: dict[str, Any], tokenizer: Any, n: int = 3, console: Any = None) -> None:
    """Print the first ``n`` samples of the train split of a ``dataset.tokenized`` entry."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = console or Console()
    if tokenized.get("task", "sft") != "sft":
        _print_preference_preview(tokenized, tokenizer, n, console)
        return
    rows = load_tokenized(tokenized["train"] or tokenized["head"])  # streaming: the head rows INPUT checked
    console.print(
        f"cache key {tokenized['cache_key']}  train_on={tokenized['train_on']}  packing={tokenized['packing']}  "
        f"max_seq_length={tokenized['max_seq_length']}  rows={len(rows)}  tokens={rows.num_tokens:,}",
        highlight=False,
    )
    console.print(f"[{TRAINED_STYLE}]trained tokens[/]  [{MASKED_STYLE}]masked tokens (label -100)[/]")
    shown = 0
    for row_index in range(len(rows)):
        row = rows[row_index]
        start = 0
        for length in row["seq_lengths"]:
            if shown == n:
                return
            ids = row["input_ids"][start : start + length]
            labels = row["labels"][start : start + length]
            start += length
            trained = sum(label != IGNORE_INDEX for label in labels)
            title = (
                f"sample {shown + 1} (row {row_index}): {length} tokens, {trained} trained, {length - trained} masked"
            )
            console.print(Panel(render_sample(ids, labels, tokenizer), title=title, title_align="left"))
            shown += 1
    if shown == 0:
        console.print(Table(title="no samples"))


def _print_preference_preview(tokenized: dict[str, Any], tokenizer: Any, n: int, console: Any) -> None:
    """Each of the first ``n`` examples as its sequences (chosen and rejected, or the completion)."""
    from rich.panel import Panel

    split = load_preference_split(tokenized["train"])
    console.print(
        f"cache key {tokenized['cache_key']}  task={split.task}  max_seq_length={tokenized['max_seq_length']}  "
        f"examples={len(split)}",
        highlight=False,
    )
    console.print(f"[{TRAINED_STYLE}]trained tokens (the answer)[/]  [{MASKED_STYLE}]masked tokens (label -100)[/]")
    for index in range(min(n, len(split))):
        example = split[index]
        label = f", {'desirable' if example['desirable'] else 'undesirable'}" if "desirable" in example else ""
        for part in PARTS[split.task]:
            ids, labels = example[f"{part}_input_ids"], example[f"{part}_labels"]
            trained = sum(label != IGNORE_INDEX for label in labels)
            title = f"example {index + 1} {part}{label}: {len(ids)} tokens, {trained} trained"
            console.print(Panel(render_sample(ids, labels, tokenizer), title=title, title_align="left"))


def render_sample(ids: list[int], labels: list[int], tokenizer: Any) -> Any:
    """A rich Text of the sample, token by token, styled by whether the token is trained."""
    from rich.text import Text

    text = Text()
    pieces = _token_texts(ids, tokenizer)
    for piece, label in zip(pieces, labels, strict=True):
        text.append(piece, style=TRAINED_STYLE if label != IGNORE_INDEX else MASKED_STYLE)
    return text


def _token_texts(ids: list[int], tokenizer: Any, context: int = 8) -> list[str]:
    """Each token's text, decoded after a few tokens of context.

    Decoding a token alone loses SentencePiece's leading space and splits multi-byte characters;
    the difference between decoding the context with and without the token keeps both right.
    """
    pieces: list[str] = []
    shown_up_to = 0  # tokens of an incomplete character wait until it is complete
    for end in range(1, len(ids) + 1):
        start = max(0, shown_up_to - context)
        text = _decode(ids[start:end], tokenizer)
        if text.endswith("\ufffd") and end < len(ids):
            pieces.append("")
            continue
        pieces.append(text[len(_decode(ids[start:shown_up_to], tokenizer)) :])
        shown_up_to = end
    return pieces


def _decode(ids: list[int], tokenizer: Any) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
