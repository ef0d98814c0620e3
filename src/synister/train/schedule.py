"""The learning rate at each iteration: warm-up, then constant, cosine or step decay.

A pure function of the iteration, so a resumed run continues the schedule where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Step decay: the rate is multiplied by STEP_FACTOR at each of these shares of the schedule.
STEP_MILESTONES = (0.5, 0.75)
STEP_FACTOR = 0.1


@dataclass(frozen=True)
class LearningRateSchedule:
    """``rate(i)`` is the learning rate of iteration ``i`` (1 = the first step)."""

    base: float
    kind: str = "constant"  # constant, cosine or step
    warmup: int = 0
    total: int | None = None  # iterations the decay spans; needed for cosine and step
    final_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "cosine", "step"):
            raise ValueError(f"unknown learning-rate schedule {self.kind!r}")
        if self.kind != "constant" and not self.total:
            raise ValueError(f"the {self.kind} schedule needs the total number of iterations")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    def rate(self, iteration: int) -> float:
        if self.warmup and iteration <= self.warmup:
            return self.base * iteration / self.warmup
        if self.kind == "constant":
            return self.base
        span = max(self.total - self.warmup, 1)
        progress = min(max((iteration - self.warmup) / span, 0.0), 1.0)
        if self.kind == "cosine":
            f = self.final_fraction
            return self.base * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * progress)))
        passed = sum(progress > m for m in STEP_MILESTONES)
        return self.base * STEP_FACTOR**passed
