"""The six stages a workflow runs through, in order, plus the ERROR handlers."""

from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    INPUT = "INPUT"  # acquire data
    PARSE = "PARSE"  # validate and resolve configuration
    THINK = "THINK"  # prepare before the heavy work: tokenization, packing, memory plan
    DO = "DO"  # train
    REVIEW = "REVIEW"  # evaluate, decide PASS/FAIL
    OUTPUT = "OUTPUT"  # export, report
    ERROR = "ERROR"  # runs only when another stage failed

    @classmethod
    def parse(cls, name: str) -> Stage:
        """Case-insensitive lookup; raises ValueError listing the valid names."""
        try:
            return cls(str(name).strip().upper())
        except ValueError:
            valid = ", ".join(s.value for s in ALL_STAGES)
            raise ValueError(f"unknown stage {name!r}; valid stages are {valid}") from None


RUN_ORDER: tuple[Stage, ...] = (
    Stage.INPUT,
    Stage.PARSE,
    Stage.THINK,
    Stage.DO,
    Stage.REVIEW,
    Stage.OUTPUT,
)
ALL_STAGES: tuple[Stage, ...] = RUN_ORDER + (Stage.ERROR,)
