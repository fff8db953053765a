"""An engine's time on its share of the work, by simulating continuous batching with a measured
step model (operators/step_model.py) instead of dividing tokens by one tokens/s figure.

The engine admits rows in order while its running sequences stay within `max_num_seqs` (a row
with n choices is n sequences decoding side by side, as vLLM runs it) and their KV (prompt and
every token max_tokens allows for each choice, as the feeder's budget counts a request's worst
case, operators/kv_blocks.py, here without blocks or a shared prefix) fits its KV capacity;
each step emits one token for every running sequence and costs `fixed + per_sequence * b`, b
the running sequences. Between two
events (a row ends, so another may start) b is constant; each row's prompt adds its prefill's
seconds once, so the simulation walks the rows'
ends, not their tokens: a sample of 20,000 rows is a few hundred milliseconds.

Lengths may be fractional (a row's max_tokens times the expected share of it): a step is then
a share of a step, and the tokens add up to the work's.

>>> from operators.step_model import StepModel
>>> engine = Engine(StepModel(fixed=1.0, per_sequence=0.5, b_min=1, b_max=2, steps=100), max_seqs=2)
>>> simulate([Row(1, 1), Row(2, 2), Row(4, 4)], engine)  # test_estimate_batching.py works it by hand
8.5
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from operators.step_model import StepModel

GOLDEN = (5 ** 0.5 - 1) / 2


@dataclass(frozen=True)
class Row:
    length: float  # output tokens expected of each choice (at least one: the step that takes a row emits its first)
    kv_tokens: int  # what the feeder's budget counts it as: prompt + n * max_tokens
    prompt_tokens: int = 0  # computed by the step that takes it (the model's per_prompt_token)
    sequences: int = 1  # its choices (n), decoding side by side

    @property
    def tokens(self) -> float:
        return max(1.0, self.length) * self.sequences


@dataclass(frozen=True)
class Engine:
    model: StepModel
    max_seqs: int  # vLLM's max_num_seqs
    kv_tokens: int | None = None  # its KV capacity (None: unknown, only max_seqs limits)


def simulate(rows: list[Row], engine: Engine) -> float:
    """Seconds of engine steps to decode `rows` in order, continuously batched."""
    return simulate_peak(rows, engine)[0]


def simulate_peak(rows: list[Row], engine: Engine) -> tuple[float, int]:
    """simulate's seconds, and the most sequences a step ran (beyond the model's b_max: a guess)."""
    peak = 0
    running: list[tuple[float, int, int]] = []  # (the step it ends at, its KV, its sequences), soonest first
    step, seconds, held, seqs, i = 0.0, 0.0, 0, 0, 0
    while True:
        while i < len(rows) and (not running or (
                seqs + rows[i].sequences <= engine.max_seqs
                and (engine.kv_tokens is None or held + rows[i].kv_tokens <= engine.kv_tokens))):
            heapq.heappush(running, (step + max(1.0, rows[i].length), rows[i].kv_tokens, rows[i].sequences))
            held += rows[i].kv_tokens
            seqs += rows[i].sequences
            seconds += engine.model.per_prompt_token * rows[i].prompt_tokens
            i += 1
        if not running:
            return seconds, peak
        ends = running[0][0]
        peak = max(peak, min(seqs, engine.max_seqs))
        seconds += (ends - step) * engine.model.seconds(min(seqs, engine.max_seqs))
        step = ends
        while running and running[0][0] <= step:
            _, kv, n = heapq.heappop(running)
            held, seqs = held - kv, seqs - n


def expected_lengths(max_tokens: list[int], ratio: float, bins: list[int] | None = None,
                     choices: list[int] | None = None) -> list[float]:
    """Each row's output tokens to expect: its max_tokens times `ratio` (the share of max_tokens
    used, work.py), spread as a run measured the shares spread (`bins`: requests counted by the
    share they used, operators/feeder.py) and scaled so they use `ratio` of the whole. Rows draw
    their shares in a golden-ratio sequence of quantiles, so any run of them is spread alike.

    >>> expected_lengths([10, 10], 0.5)
    [5.0, 5.0]
    >>> [round(x, 2) for x in expected_lengths([10, 10, 10, 10], 0.5, [1, 0, 0, 1])]
    [1.57, 9.77, 7.83, 0.83]
    """
    if not bins or not sum(bins):
        return [m * ratio for m in max_tokens]
    choices = choices or [1] * len(max_tokens)
    raw = [m * _quantile(bins, (i + 0.5) * GOLDEN % 1.0) for i, m in enumerate(max_tokens)]
    made = sum(r * n for r, n in zip(raw, choices, strict=True))
    scale = ratio * sum(m * n for m, n in zip(max_tokens, choices, strict=True)) / made if made else 0.0
    return [min(float(m), r * scale) for m, r in zip(max_tokens, raw, strict=True)]


def _quantile(bins: list[int], q: float) -> float:
    """The share at quantile q of a histogram of shares over [0, 1] (uniform within a bin)."""
    total, seen = sum(bins), 0.0
    for k, count in enumerate(bins):
        if count and seen + count >= q * total:
            return (k + (q * total - seen) / count) / len(bins)
        seen += count
    return 1.0


def engine_seconds(sample: list[Row], tokens_each: float, engine: Engine) -> float:
    return engine_seconds_peak(sample, tokens_each, engine)[0]


def engine_seconds_peak(sample: list[Row], tokens_each: float, engine: Engine) -> tuple[float, int]:
    """One engine's seconds for `tokens_each` output tokens of rows like `sample` (the rows the
    estimate read): the sample simulated and scaled by tokens, or, where an engine's share is
    less than the sample, a share of the sample spread over it (so a small run's engine is as
    short of rows as it will be)."""
    sample_tokens = sum(r.tokens for r in sample)
    if not sample or tokens_each <= 0:
        return 0.0, 0
    if tokens_each < sample_tokens:
        stride = max(1, math.floor(sample_tokens / tokens_each))
        sample = sample[::stride]
        sample_tokens = sum(r.tokens for r in sample)
    seconds, peak = simulate_peak(sample, engine)
    return seconds * tokens_each / sample_tokens, peak
