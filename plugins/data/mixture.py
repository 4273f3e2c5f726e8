"""Weighted mixing of several data sources: which source the next sample comes from.

``MixtureScheduler`` is deterministic and greedy: it always picks the available source furthest
below its target share (in trained tokens or in rows), so after n picks every source is within one
sample of its target. It holds only counts, so its state is a small dict that resumes exactly.
``mix_samples`` uses it to choose, from whole sources tokenized in memory, the samples of one
mixture: see its docstring for the size and the repetition rules.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

MixUnit = Literal["tokens", "rows"]
UNITS: tuple[MixUnit, ...] = ("tokens", "rows")


class MixtureScheduler:
    """Picks sources so that their realised shares follow ``weights`` (any scale, >= 0, not all zero)."""

    def __init__(self, weights: dict[str, float], unit: MixUnit):
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        if not weights or any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"weights must be >= 0 and not all zero, got {weights}")
        self.unit = unit
        total = sum(weights.values())
        self.weights = dict(weights)
        self.target = {name: w / total for name, w in weights.items()}
        self._candidates = sorted((name, share) for name, share in self.target.items() if share > 0)
        self.rows = dict.fromkeys(weights, 0)
        self.trained_tokens = dict.fromkeys(weights, 0)

    def next_source(self, available: Collection[str]) -> str:
        """The available source with a positive weight furthest below its target share.

        Ties go to the first name in sorted order, so the picks depend on neither the order of
        ``weights`` nor that of ``available`` (a mixture spec read back from JSON may come sorted).
        Raises ValueError when no available source has a positive weight.
        """
        counts = self._counts()
        done = sum(counts.values())
        best, best_gap = None, 0.0
        for name, share in self._candidates:
            if name not in available:
                continue
            gap = share * done - counts[name]  # how far below its target, in units
            if best is None or gap > best_gap:
                best, best_gap = name, gap
        if best is None:
            raise ValueError(f"no source with a positive weight is available (available: {sorted(available)})")
        return best

    def record(self, source: str, rows: int, trained_tokens: int) -> None:
        """Count what was taken from ``source``."""
        if source not in self.target:
            raise KeyError(f"unknown source {source!r}; the sources are {list(self.target)}")
        self.rows[source] += rows
        self.trained_tokens[source] += trained_tokens

    def state_dict(self) -> dict:
        return {
            "unit": self.unit,
            "weights": dict(self.weights),
            "rows": dict(self.rows),
            "trained_tokens": dict(self.trained_tokens),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``; raises ValueError when it belongs to another mixture."""
        if state.get("unit") != self.unit or state.get("weights") != self.weights:
            raise ValueError(
                f"the saved mixture state is for unit {state.get('unit')!r} and weights {state.get('weights')}, "
                f"not {self.unit!r} and {self.weights}"
            )
        self.rows = {name: int(state["rows"][name]) for name in self.weights}
        self.trained_tokens = {name: int(state["trained_tokens"][name]) for name in self.weights}

    def realised(self) -> dict[str, dict]:
        """Per source: rows, trained_tokens, their shares of all taken so far, and the target share."""
        all_rows, all_tokens = sum(self.rows.values()), sum(self.trained_tokens.values())
        return {
            name: {
                "rows": self.rows[name],
                "trained_tokens": self.trained_tokens[name],
                "share_rows": round(self.rows[name] / all_rows, 4) if all_rows else 0.0,
                "share_tokens": round(self.trained_tokens[name] / all_tokens, 4) if all_tokens else 0.0,
                "target_share": round(self.target[name], 4),
            }
            for name in self.weights
        }

    def _counts(self) -> dict[str, int]:
        return self.trained_tokens if self.unit == "tokens" else self.rows


def mix_samples(
    trained_tokens: Mapping[str, Sequence[int]], weights: dict[str, float], unit: MixUnit, *, seed: int
) -> tuple[list[tuple[str, int]], MixtureScheduler]:
    """Choose the samples of one mixture: ``(source, index)`` pairs in training order, and the scheduler.

    ``trained_tokens[name][i]`` is the trained-token count of sample i of source ``name``. The
    mixture is as large as its sources with a positive weight together, in ``unit``; each source
    gives ``target share x that size``: a source below its natural share is sub-sampled, one above
    it is repeated (whole passes, then a sub-sample). Within a source the samples come in a seeded
    random order, reshuffled for each pass, so a repeated source repeats every sample before any
    sample a third time. Sources with weight 0 give nothing.
    """
    for name in weights:
        if weights[name] > 0 and not trained_tokens.get(name):
            raise ValueError(f"the source {name!r} has a positive weight but no samples")
    scheduler = MixtureScheduler(weights, unit)
    live = frozenset(name for name in weights if weights[name] > 0)
    size = sum(sum(trained_tokens[name]) if unit == "tokens" else len(trained_tokens[name]) for name in live)
    orders = {name: _passes(len(trained_tokens[name]), random.Random(f"{seed}:{name}")) for name in live}
    chosen: list[tuple[str, int]] = []
    taken = 0
    while taken < size:
        name = scheduler.next_source(live)
        index = next(orders[name])
        tokens = trained_tokens[name][index]
        scheduler.record(name, 1, tokens)
        chosen.append((name, index))
        taken += tokens if unit == "tokens" else 1
    return chosen, scheduler


def _passes(count: int, rng: random.Random):
    """Sample indices 0..count-1 forever, one seeded permutation per pass."""
    while True:
        order = list(range(count))
        rng.shuffle(order)
        yield from order
