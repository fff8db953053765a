"""An engine's step time against the sequences it runs: `seconds = fixed + per_sequence * b`.

One tokens/s figure hides how an engine batches: a step costs about the same whether it runs 4
sequences or 40, so tokens/s grows with the sequences held at once. A speed measured on a
small sample (few sequences at once, a long tail decoded alone) then says little about a whole
run. The feeder (operators/feeder.py) adds each step's running count b and wall time t to
`StepSums`; their least-squares line is the model the estimate simulates batching with
(pipelines/estimate/batching.py). Sums add, so several engines' steps pool into one fit.

>>> sums = StepSums()
>>> for b in (1, 2, 3, 4) * 10:
...     sums.add(b, 0.5 + 0.25 * b)
>>> fit = fit_steps(sums)
>>> round(fit.fixed, 6), round(fit.per_sequence, 6), fit.b_min, fit.b_max, fit.steps
(0.5, 0.25, 1, 4, 40)
>>> fit.seconds(10)
3.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MIN_STEPS = 20  # fewer steps fit noise, not the engine


@dataclass
class StepSums:
    """What a least-squares line of t on b needs, kept as floats so they ride the feeder's beats."""

    n: float = 0.0
    b: float = 0.0
    t: float = 0.0
    bb: float = 0.0
    bt: float = 0.0
    b_min: int = 0  # 0: no step yet
    b_max: int = 0

    def add(self, b: int, t: float) -> None:
        self.n += 1
        self.b += b
        self.t += t
        self.bb += b * b
        self.bt += b * t
        self.b_min = b if self.b_min == 0 else min(self.b_min, b)
        self.b_max = max(self.b_max, b)

    def merge(self, other: StepSums) -> StepSums:
        mins = [m for m in (self.b_min, other.b_min) if m]
        return StepSums(self.n + other.n, self.b + other.b, self.t + other.t, self.bb + other.bb,
                        self.bt + other.bt, min(mins) if mins else 0, max(self.b_max, other.b_max))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StepSums:
        data = data or {}
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class StepModel:
    fixed: float  # seconds a step costs whatever it runs
    per_sequence: float  # seconds each running sequence adds to a step
    b_min: int  # the running counts the fit saw
    b_max: int
    steps: int

    def seconds(self, b: float) -> float:
        return self.fixed + self.per_sequence * b

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fit_steps(sums: StepSums, min_steps: int = MIN_STEPS) -> StepModel | None:
    """The least-squares line, or None where it would be a guess: fewer than `min_steps` steps,
    one running count only (no slope to fit), or a line that is not a cost (a negative part)."""
    spread = sums.n * sums.bb - sums.b * sums.b
    if sums.n < min_steps or sums.b_min == sums.b_max or spread <= 0:
        return None
    per_sequence = (sums.n * sums.bt - sums.b * sums.t) / spread
    fixed = (sums.t - per_sequence * sums.b) / sums.n
    if per_sequence < 0 or fixed < 0:
        return None
    return StepModel(fixed, per_sequence, sums.b_min, sums.b_max, int(sums.n))
