"""A run's cost by LoRA adapter (model.adapters): rows of several adapters share one engine, so
each adapter's line is the run's cost split in proportion to the tokens its rows made the engine
process (input and output), and the lines add up to the run's total. Tokens are counted where the
engine returned them, per attempt that committed (its end record's `adapter_tokens`).

>>> tokens = adapter_tokens({"served_from": ["engine", "cache", "engine", None],
...                          "prompt_tokens": [5, 5, 7, None], "completion_tokens": [3, 3, 4, None]},
...                         ["sql", "sql", None, "sql"])
>>> tokens
{'sql': [5, 3], '(base)': [7, 4]}
>>> lines = split_cost(2.0, tokens)
>>> lines["sql"]["usd"], lines["(base)"]["usd"]
(0.8421052631578947, 1.1578947368421053)
"""

from __future__ import annotations

from typing import Any

from operators.engine_config import BASE_ADAPTER
from pipelines.store.counts import ENGINE
from pipelines.store.record_types import AttemptOutcome, attempt_outcome

BASE = BASE_ADAPTER  # the base model's line


def adapter_tokens(cols: dict[str, list], adapters: list[str | None]) -> dict[str, list[int]]:
    """The input and output tokens the engine processed for a unit's rows, by adapter."""
    tokens: dict[str, list[int]] = {}
    for i, served in enumerate(cols["served_from"]):
        if served == ENGINE:  # reused answers (a duplicate, the cache) cost no engine time
            line = tokens.setdefault(adapters[i] or BASE, [0, 0])
            line[0] += cols["prompt_tokens"][i] or 0
            line[1] += cols["completion_tokens"][i] or 0
    return tokens


def committed_adapter_tokens(settled: dict[str, dict[str, dict[str, Any]]]) -> dict[str, list[int]]:
    """Every committed attempt's tokens by adapter, summed (the records' `adapter_tokens`)."""
    total: dict[str, list[int]] = {}
    for tries in settled.values():
        for attempt in tries.values():
            if attempt_outcome(attempt) is not AttemptOutcome.COMMITTED:
                continue
            for name, (prompt, completion) in ((attempt.get("end") or {}).get("adapter_tokens") or {}).items():
                line = total.setdefault(name, [0, 0])
                line[0] += prompt
                line[1] += completion
    return total


def split_cost(total_usd: float, tokens: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    """A cost line per adapter: its tokens, and its share of `total_usd` by tokens processed."""
    processed = sum(p + c for p, c in tokens.values())
    lines = {}
    for name, (prompt, completion) in sorted(tokens.items()):
        usd = total_usd * (prompt + completion) / processed if processed else 0.0
        lines[name] = {"usd": usd, "input_tokens": prompt, "output_tokens": completion,
                       "usd_per_1m_output_tokens": usd / completion * 1e6 if completion else None}
    return lines
