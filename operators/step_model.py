"""An engine's step time against the sequences it runs: `seconds = fixed + per_sequence * b
+ per_prompt_token * p`, p the prompt tokens of the requests added since the step before (their
prefill; without it, a sample whose prompts were all computed in its first step fits a
per-sequence cost that a run admitting requests all along, each step computing some prompts,
exceeds: the long-tail set's whole run 24 ms a running request where its 48-row sample had 15).

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
# The prompt term is fitted only from this many steps that computed prompts, and this share of
# all: from one step (every prompt added before the first) it would absorb that step's one-time
# cost, not measure a prompt token's.
MIN_PROMPT_STEPS, MIN_PROMPT_STEP_SHARE = 5, 0.1


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
    p: float = 0.0
    pp: float = 0.0
    bp: float = 0.0
    pt: float = 0.0
    p_steps: float = 0.0  # steps that computed prompt tokens (p > 0)

    def add(self, b: int, t: float, p: int = 0) -> None:
        self.n += 1
        self.b += b
        self.t += t
        self.bb += b * b
        self.bt += b * t
        self.p += p
        self.pp += p * p
        self.bp += b * p
        self.pt += p * t
        self.p_steps += p > 0
        self.b_min = b if self.b_min == 0 else min(self.b_min, b)
        self.b_max = max(self.b_max, b)

    def merge(self, other: StepSums) -> StepSums:
        mins = [m for m in (self.b_min, other.b_min) if m]
        added = {k: getattr(self, k) + getattr(other, k) for k in ("n", "b", "t", "bb", "bt", "p", "pp", "bp", "pt",
                                                            "p_steps")}
        return StepSums(**added, b_min=min(mins) if mins else 0, b_max=max(self.b_max, other.b_max))

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
    per_prompt_token: float = 0.0  # seconds each prompt token adds to the step that computes it

    def seconds(self, b: float) -> float:
        """A step's seconds without its prefill (per_prompt_token counts that, once a prompt token)."""
        return self.fixed + self.per_sequence * b

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fit_steps(sums: StepSums, min_steps: int = MIN_STEPS) -> StepModel | None:
    """The least-squares fit of t on (1, b, p) with no negative part (a cost is not negative):
    the best of the fits on each subset of the three terms whose parts are all >= 0, the exact
    non-negative least squares for three terms; the prompt term only where enough steps computed
    prompts (MIN_PROMPT_STEPS). None where it would be a guess: fewer than
    `min_steps` steps, or one running count only (no slope to fit)."""
    import itertools

    import numpy as np

    if sums.n < min_steps or sums.b_min == sums.b_max or sums.n * sums.bb - sums.b * sums.b <= 0:
        return None
    gram = np.array([[sums.n, sums.b, sums.p], [sums.b, sums.bb, sums.bp], [sums.p, sums.bp, sums.pp]])
    moments = np.array([sums.t, sums.bt, sums.pt])
    best, best_loss = None, np.inf
    prompts_vary = sums.p_steps >= max(MIN_PROMPT_STEPS, MIN_PROMPT_STEP_SHARE * sums.n)
    for k in (1, 2, 3):
        for terms in itertools.combinations(range(3 if prompts_vary else 2), k):
            sub = gram[np.ix_(terms, terms)]
            if np.linalg.cond(sub) > 1e12:
                continue  # a term that never varies (no prompt tokens counted, say)
            part = np.linalg.solve(sub, moments[list(terms)])
            if (part < 0).any():
                continue
            theta = np.zeros(3)
            theta[list(terms)] = part
            loss = theta @ gram @ theta - 2 * theta @ moments  # the squared error less sum(t^2)
            if loss < best_loss:
                best, best_loss = theta, loss
    if best is None:
        return None
    return StepModel(float(best[0]), float(best[1]), sums.b_min, sums.b_max, int(sums.n), float(best[2]))
