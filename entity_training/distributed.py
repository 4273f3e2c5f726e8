"""Which process of a distributed run (``accelerate launch``, ``torchrun``) this is."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """True unless this is a non-zero rank: the global ``RANK``, else ``LOCAL_RANK`` when only that is set.

    Only the main process writes the run's files, exports and reports, and prints tables."""
    rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"
    return rank == "0"
