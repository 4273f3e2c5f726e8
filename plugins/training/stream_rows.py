"""The streamed training rows as the Trainer's ``IterableDataset``, saved and restored with checkpoints."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from plugins.data.encoding import backend_tokenizer, encode_one
from plugins.data.stream_spec import StreamSpec, check_unchanged
from plugins.data.stream_state import read_stream_state, write_stream_state
from plugins.data.streaming import PackedStream
from plugins.data.templates import TemplateRenderer


class StreamingRows(torch.utils.data.IterableDataset):
    """Packed rows read from the files of ``dataset.tokenized["stream"]`` as training goes.

    ``lookback``: rows of stream state kept behind the reading position; it must cover what the
    data loader reads ahead of training (one micro-batch with accelerate's prefetch).
    """

    def __init__(self, tokenized: dict[str, Any], tokenizer: Any, *, lookback: int):
        super().__init__()
        self.spec = StreamSpec.model_validate(tokenized["stream"])
        check_unchanged(self.spec)
        encode = partial(
            encode_one,
            backend=backend_tokenizer(tokenizer),
            renderer=TemplateRenderer(tokenized["chat_template"], tokenizer),
            train_on=tokenized["train_on"],
            max_seq_length=tokenized["max_seq_length"],
            truncation=tokenized["truncation"],
        )
        self.stream = PackedStream(
            self.spec,
            encode,
            max_seq_length=tokenized["max_seq_length"],
            packing=tokenized["packing"],
            lookback=lookback,
        )

    def __iter__(self):
        return iter(self.stream)

    def save_state(self, folder: Path, *, rows: int) -> None:
        """Write the stream's state after ``rows`` rows into a checkpoint folder."""
        write_stream_state(folder, self.stream.state_at(rows), self.spec)

    def load_state(self, folder: Path) -> int:
        """Continue from the state in checkpoint ``folder``; returns the rows trained before it."""
        state = read_stream_state(folder, self.spec)
        self.stream.load_state_dict(state)
        return state["rows_yielded"]

    def statistics(self) -> dict[str, Any]:
        return self.stream.statistics()
