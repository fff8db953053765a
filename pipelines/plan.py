"""Planning: split shards into work units and fingerprint what decides the answers.

A unit is a row range of one shard, sized by estimated engine tokens so that units take
similar engine time. Its name comes from the input alone (shard index and row range), so a
retried or resumed unit always writes to the same name.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.inputs import Shard
from pipelines.spec import PipelineSpec

BYTES_PER_TOKEN = 4  # rough for English BPE; only used to size units, never to count cost


@dataclass(frozen=True)
class Unit:
    unit_id: str
    path: str
    start: int  # first row, inclusive
    stop: int  # last row, exclusive

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_units(shards: list[Shard], tokens_per_unit: int, max_tokens: int) -> list[Unit]:
    """Row ranges of each shard whose estimated prompt + completion tokens fit the budget."""
    units: list[Unit] = []
    for index, shard in enumerate(shards):
        if shard.num_rows == 0:
            continue
        prompt_tokens_per_row = shard.prompt_bytes / shard.num_rows / BYTES_PER_TOKEN
        rows_per_unit = max(1, int(tokens_per_unit // (prompt_tokens_per_row + max_tokens)))
        count = math.ceil(shard.num_rows / rows_per_unit)
        # Even ranges: ten units of 100 rows, never nine of 105 and one of 55.
        bounds = [shard.num_rows * i // count for i in range(count + 1)]
        for start, stop in zip(bounds, bounds[1:]):
            units.append(Unit(f"{index:05d}-{start:010d}-{stop:010d}", shard.path, start, stop))
    return units


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(spec: PipelineSpec) -> list:
    """What about the model decides its answers: which model, and how it is loaded."""
    m = spec.model
    return [m.name, m.dtype, m.max_model_len, m.quantization, m.engine_kwargs]


def fingerprint_parts(spec: PipelineSpec, shards: list[Shard]) -> dict[str, str]:
    """One digest for each thing that decides the answers, so a mismatch can be named."""
    inp, model = spec.input, spec.model
    return {
        "input files": _digest([(s.path, s.size, s.version) for s in shards]),
        "id column": _digest(inp.id_column),
        "prompt": _digest([inp.prompt_column, inp.template, inp.format]),
        "system prompt": _digest(inp.system_prompt),
        "model": _digest(model_identity(spec)),
        "sampling": _digest(spec.sampling.model_dump() | (
            {"max_tokens_column": inp.max_tokens_column} if inp.max_tokens_column else {})),
    }


def fingerprint(parts: dict[str, str]) -> str:
    return _digest(parts)


@dataclass
class Plan:
    fingerprint: str
    parts: dict[str, str]
    id_column: str
    units: list[Unit]
    input_rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "fingerprint": self.fingerprint,
            "parts": self.parts,
            "id_column": self.id_column,
            "input_rows": self.input_rows,
            "units": [asdict(u) for u in self.units],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        return cls(
            fingerprint=data["fingerprint"],
            parts=data["parts"],
            id_column=data["id_column"],
            input_rows=data["input_rows"],
            units=[Unit(**u) for u in data["units"]],
        )


def make_plan(spec: PipelineSpec, shards: list[Shard]) -> Plan:
    parts = fingerprint_parts(spec, shards)
    units = plan_units(shards, spec.compute.tokens_per_unit, spec.sampling.max_tokens)
    return Plan(
        fingerprint=fingerprint(parts),
        parts=parts,
        id_column=spec.input.id_column,
        units=units,
        input_rows=sum(s.num_rows for s in shards),
    )
