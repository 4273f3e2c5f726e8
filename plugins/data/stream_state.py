"""A ``PackedStream`` state on disk, inside a checkpoint: ``stream_state.json`` and ``stream_state.npz``.

The JSON holds the positions, the mixture, the RNG and which samples sit where (buffer, open
rows, rows ready); the npz holds those samples' tokens and labels. No pickle: a checkpoint is
data. The stream's description is stored with it, so a resume under another stream (other files,
seed or buffer size) is refused instead of continuing a different stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from entity_training import InputError, Problem
from plugins.data.stream_spec import StreamSpec

STATE_JSON = "stream_state.json"
STATE_ARRAYS = "stream_state.npz"


def write_stream_state(folder: Path, state: dict[str, Any], spec: StreamSpec) -> None:
    samples: list[tuple[np.ndarray, np.ndarray, int]] = []
    numbers: dict[int, int] = {}

    def number_of(sample) -> int:
        if id(sample) not in numbers:
            numbers[id(sample)] = len(samples)
            samples.append(sample)
        return numbers[id(sample)]

    places = {
        "buffer": [number_of(s) for s in state["buffer"]],
        "open_rows": [[number_of(s) for s in row] for row in state["open_rows"]],
        "ready": [[number_of(s) for s in row] for row in state["ready"]],
    }
    empty = np.zeros(0, np.int32)
    np.savez(
        Path(folder) / STATE_ARRAYS,
        input_ids=np.concatenate([s[0] for s in samples]) if samples else empty,
        labels=np.concatenate([s[1] for s in samples]) if samples else empty,
        lengths=np.asarray([len(s[0]) for s in samples], dtype=np.int64),
        sources=np.asarray([s[2] for s in samples], dtype=np.int64),
    )
    version, internal, gauss = state["rng"]
    meta = {
        "spec": spec.model_dump(mode="json"),
        "rows_yielded": state["rows_yielded"],
        "cursors": state["cursors"],
        "scheduler": state["scheduler"],
        "rng": [version, list(internal), gauss],
        "counts": state["counts"],
        **places,
    }
    (Path(folder) / STATE_JSON).write_text(json.dumps(meta), encoding="utf-8")


def read_stream_state(folder: Path, spec: StreamSpec) -> dict[str, Any]:
    """The state saved in checkpoint ``folder``; InputError when it is missing or of another stream."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        arrays = np.load(folder / STATE_ARRAYS)
    except (OSError, ValueError) as exc:
        raise InputError(
            Problem(
                f"the checkpoint has no readable stream state ({exc}), so the data stream cannot continue where it "
                "stopped. Resume from a checkpoint written by a streaming run, or start again without --resume.",
                file=str(folder),
            )
        ) from None
    if StreamSpec.model_validate(meta["spec"]) != spec:
        raise InputError(
            Problem(
                "the checkpoint was written by a run that streamed other data (files, weights, seed or "
                "shuffle_buffer differ), so resuming would not continue its stream. Restore those settings, or start "
                "again without --resume.",
                file=str(folder),
            )
        )
    with arrays:  # an npz member is read from the file at each access: read each once
        ids, labels, lengths, sources = (arrays[name] for name in ("input_ids", "labels", "lengths", "sources"))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    samples = [
        (ids[offsets[i] : offsets[i + 1]], labels[offsets[i] : offsets[i + 1]], int(source))
        for i, source in enumerate(sources.tolist())
    ]
    return {
        "rows_yielded": meta["rows_yielded"],
        "cursors": meta["cursors"],
        "scheduler": meta["scheduler"],
        "rng": meta["rng"],
        "counts": meta["counts"],
        "buffer": [samples[n] for n in meta["buffer"]],
        "open_rows": [[samples[n] for n in row] for row in meta["open_rows"]],
        "ready": [[samples[n] for n in row] for row in meta["ready"]],
    }
