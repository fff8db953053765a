"""The counts of a unit, and of any set of units: the one place they are spelled out.

A unit's counts go into its results' footer, its attempt's end record and the summary row its
actor returns; a run's summary and `status` are sums of them. Tokens are what the engine
processed; rows answered by a duplicate or the cache cost no engine time and are counted apart.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

# Where a row's answer came from (the `served_from` result column); None for an error record.
ENGINE, DUPLICATE, CACHE = "engine", "duplicate", "cache"
REUSED = (DUPLICATE, CACHE)


@dataclass
class UnitCounts:
    rows: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_seconds: float = 0.0
    reused_rows: int = 0  # answered by a duplicate in the run or by the response cache
    reused_completion_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens, the thinking a reasoning parser kept apart
    cached_prompt_tokens: int = 0  # of prompt_tokens, those the engine's prefix cache already held
    errors_by_class: dict[str, int] = field(default_factory=dict)  # operators/failures.py

    @classmethod
    def of_results(cls, cols: dict[str, list], engine_seconds: float) -> UnitCounts:
        """The counts of a unit's result columns (operators/generate.py's RESULT_SCHEMA)."""
        served = cols["served_from"]
        engine = [i for i, s in enumerate(served) if s == ENGINE]
        reused = [i for i, s in enumerate(served) if s in REUSED]
        by_class = dict(Counter(c for c in cols["error_class"] if c is not None))
        completion = cols.get("completion_tokens") or [0] * len(served)  # an embedding generates none
        reasoning = cols.get("reasoning_tokens") or [0] * len(served)
        cached = cols.get("cached_prompt_tokens") or [0] * len(served)  # an embedding's has none
        return cls(
            rows=len(cols["error"]),
            errors=sum(by_class.values()),
            prompt_tokens=sum(cols["prompt_tokens"][i] for i in engine),
            completion_tokens=sum(completion[i] for i in engine),
            engine_seconds=engine_seconds,
            reused_rows=len(reused),
            reused_completion_tokens=sum(completion[i] for i in reused),
            reasoning_tokens=sum(reasoning[i] or 0 for i in engine),
            cached_prompt_tokens=sum(cached[i] or 0 for i in engine),
            errors_by_class=by_class,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitCounts:
        """From a footer or record; fields it lacks (older records) are 0."""
        names = {f.name for f in fields(UnitCounts)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        """The counts as records and footers hold them; reasoning_tokens and cached_prompt_tokens
        only when there are some, so the records of every other run keep the keys they always had."""
        data = asdict(self)
        for name in ("reasoning_tokens", "cached_prompt_tokens"):
            if not data[name]:
                del data[name]
        return data

    def add(self, other: UnitCounts) -> None:
        for f in fields(UnitCounts):
            if f.name == "errors_by_class":
                self.errors_by_class = dict(Counter(self.errors_by_class) + Counter(other.errors_by_class))
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @classmethod
    def total(cls, units: list[UnitCounts]) -> UnitCounts:
        total = cls()
        for unit in units:
            total.add(unit)
        return total


def counts_of(data: Any) -> UnitCounts:
    """Only the UnitCounts part of a dataclass that extends it (a run's summary, say)."""
    return UnitCounts(**{f.name: getattr(data, f.name) for f in fields(UnitCounts)})


_ARROW = {int: pa.int64(), float: pa.float64(), "int": pa.int64(), "float": pa.float64()}


def counts_fields() -> list[pa.Field]:
    """UnitCounts as Arrow columns; errors_by_class travels as JSON text."""
    return [pa.field(f.name, _ARROW.get(f.type, pa.string())) for f in fields(UnitCounts)]


def counts_row(counts: UnitCounts) -> dict[str, Any]:
    row = asdict(counts)  # every column of counts_fields()
    row["errors_by_class"] = json.dumps(row["errors_by_class"])
    return row


def counts_from_row(row: dict[str, Any]) -> UnitCounts:
    return UnitCounts.from_json({**row, "errors_by_class": json.loads(row.get("errors_by_class") or "{}")})
