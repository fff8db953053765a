"""Planning: split shards into work units and fingerprint what decides the answers.

A unit is a row range of one shard, sized by estimated engine tokens so that units take
similar engine time. Its name comes from the input alone (shard index and row range), so a
retried or resumed unit always writes to the same name.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cluster.models.adapters import ADAPTER_KEY
from pipelines.engine.decode_work import prompt_tokens_per_row, unit_decode_tokens
from pipelines.planning.inputs import Shard
from pipelines.planning.routing import route_shards
from pipelines.spec import PipelineSpec

VLLM_MAX_NUM_SEQS = 256  # vLLM's default cap on the requests an engine runs at once
MAX_UNITS_IN_FLIGHT = 16


@dataclass(frozen=True)
class Unit:
    unit_id: str
    path: str
    start: int  # first row, inclusive
    stop: int  # last row, exclusive
    model: str | None = None  # routed runs: the unit is the rows of [start, stop) routed to this model
    count: int | None = None  # routed runs: how many rows that is
    version: str | None = None  # its shard's version when planned: a unit reads that version or none
    decode_tokens: int | None = None  # the most its rows may generate (engine/decode_work.py); None: older plan

    @property
    def rows(self) -> int:
        return self.count if self.count is not None else self.stop - self.start

    def descriptor(self, only_ids: bytes | None = None) -> dict:
        """What the read stage (pipelines/stream/unit_rows.py) takes; `only_ids`: a retry's rows, as
        an Arrow array in IPC form (pipelines/retry.py), so ids of every type travel exactly."""
        return {"unit_id": self.unit_id, "path": self.path, "start": self.start, "stop": self.stop,
                "model": self.model or "", "rows": self.rows, "version": self.version or "",
                "only_ids": only_ids if only_ids is not None else b""}


def _rows_per_unit(shard: Shard, tokens_per_unit: int, max_tokens: int) -> int:
    return max(1, int(tokens_per_unit // max(1.0, prompt_tokens_per_row(shard) + max_tokens)))


def _even_chunks(n: int, most: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges over n items, none over `most`, as even as can be: ten of 100, never
    nine of 105 and one of 55."""
    count = math.ceil(n / most)
    bounds = [n * i // count for i in range(count + 1)]
    return list(zip(bounds, bounds[1:]))


def plan_units(shards: list[Shard], tokens_per_unit: int, max_tokens: int,
               routes: list[list[str]] | None = None) -> list[Unit]:
    """Row ranges of each shard whose estimated prompt + completion tokens fit the budget.
    With `routes` (each row's model), each model's rows are split apart: a unit holds the rows
    of its range that go to its model, so every unit runs on one model's engines."""
    units: list[Unit] = []
    for index, shard in enumerate(shards):
        if shard.num_rows == 0:
            continue
        most = _rows_per_unit(shard, tokens_per_unit, max_tokens)
        if routes is None:
            for start, stop in _even_chunks(shard.num_rows, most):
                units.append(Unit(f"{index:05d}-{start:010d}-{stop:010d}", shard.path, start, stop,
                                  version=shard.version))
            continue
        positions: dict[str, list[int]] = {}
        for row, model in enumerate(routes[index]):
            positions.setdefault(model, []).append(row)
        for model in sorted(positions):
            rows = positions[model]
            for lo, hi in _even_chunks(len(rows), most):
                start, stop = rows[lo], rows[hi - 1] + 1
                units.append(Unit(f"{model}-{index:05d}-{start:010d}-{stop:010d}", shard.path, start, stop,
                                  model=model, count=hi - lo, version=shard.version))
    return units


def units_in_flight(spec: PipelineSpec, units: list[Unit]) -> int:
    """Units an engine actor holds at once: the spec's number, or enough that their rows fill
    the engine's running set twice over (one set running, one queued behind it), and at least
    2, so the next unit is fed while the last one's tail decodes. Units of the default size
    hold thousands of rows and need 2; small units need more, or the engine runs short-handed
    (measured on 40-row units: 2 in flight, 0.73 of plain vLLM's tokens/s; this default, 0.96)."""
    if spec.compute.units_in_flight is not None:
        return spec.compute.units_in_flight
    if spec.cost.max_cost_usd is not None:
        return 2  # a budget stops units that have not started: keep few started at a time
    seqs = int(spec.model.engine_kwargs.get("max_num_seqs", VLLM_MAX_NUM_SEQS))
    rows = sorted(u.rows for u in units)
    typical = rows[len(rows) // 2] if rows else 1  # the median: a shard's small last unit is no guide
    return max(2, min(MAX_UNITS_IN_FLIGHT, math.ceil(2 * seqs / typical)))


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(spec: PipelineSpec, source: dict[str, Any] | None = None) -> list:
    """What about the model decides its answers: which weights (the pin planning found,
    cluster/models), how they are loaded, and the chat template they are prompted with."""
    m = spec.model
    extra = {"weights": source["pin"] if source and source.get("kind") != "builtin" else None,
             "chat_template": m.chat_template, "chat_template_kwargs": m.chat_template_kwargs or None,
             "tool_parser": m.tool_parser, "reasoning_parser": m.reasoning_parser}
    extra = {k: v for k, v in extra.items() if v is not None}
    return [m.name, m.dtype, m.max_model_len, m.quantization, m.engine_kwargs] + ([extra] if extra else [])


SINGLE_MODEL = ""  # the key of `model` among a plan's model sources; routed models go by their names


def models_identity(spec: PipelineSpec, sources: dict[str, dict] | None = None) -> Any:
    """The model, or for a routed run every named model and the route."""
    sources = sources or {}
    if not spec.routed:
        return model_identity(spec, sources.get(SINGLE_MODEL))
    return {"models": {name: model_identity(spec.for_model(name), sources.get(name)) for name in spec.models},
            "route": spec.route.model_dump()}


def adapters_identity(spec: PipelineSpec, sources: dict[str, dict]) -> list:
    """Which adapters answer which rows: each name's pinned weights, and the column that picks them."""
    pins = {name: (sources.get(ADAPTER_KEY + name) or {}).get("pin") for name in sorted(spec.model.adapters)}
    return [pins, spec.input.adapter_column]


def fingerprint_parts(spec: PipelineSpec, shards: list[Shard],
                      sources: dict[str, dict] | None = None) -> dict[str, str]:
    """One digest for each thing that decides the answers, so a mismatch can be named."""
    inp = spec.input
    return {
        "input files": _digest([(s.path, s.size, s.version) for s in shards]),
        "id column": _digest(inp.id_column),
        "prompt": _digest([inp.prompt_column, inp.template, inp.format]),
        "system prompt": _digest(inp.system_prompt),
        "model": _digest(models_identity(spec, sources)),
        "sampling": _digest(spec.sampling.identity() | (
            {"max_tokens_column": inp.max_tokens_column} if inp.max_tokens_column else {}) | (
            {"sampling_column": inp.sampling_column} if inp.sampling_column else {})),
        # Only for embeddings, so the fingerprints of generation runs stay as they were.
        **({"embed": _digest(spec.embed.identity())} if spec.task == "embed" else {}),
        # Only with adapters, likewise: each adapter's name and pinned weights, and how rows pick one.
        **({"adapters": _digest(adapters_identity(spec, sources or {}))} if spec.model.adapters else {}),
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
    models: dict[str, dict] = field(default_factory=dict)  # model sources (cluster/models) by SINGLE_MODEL or name

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "fingerprint": self.fingerprint,
            "parts": self.parts,
            "id_column": self.id_column,
            "input_rows": self.input_rows,
            "units": [asdict(u) for u in self.units],
            "models": self.models,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            fingerprint=data["fingerprint"],
            parts=data["parts"],
            id_column=data["id_column"],
            input_rows=data["input_rows"],
            units=[Unit(**u) for u in data["units"]],
            models=data.get("models", {}),
        )


def make_plan(spec: PipelineSpec, shards: list[Shard], sources: dict[str, dict] | None = None) -> Plan:
    parts = fingerprint_parts(spec, shards, sources)
    routes = route_shards(spec, shards) if spec.routed else None
    # Units are sized by the work they hold: every choice's tokens; no max_tokens (up to the
    # context) is estimated as the default's, since most answers stop well short of the context.
    # An embedding decodes nothing: its units are sized by their input alone.
    embeds = spec.task == "embed"
    per_row = 0 if embeds else (spec.sampling.max_tokens or 256) * spec.sampling.n
    units = plan_units(shards, spec.compute.tokens_per_unit, per_row, routes)
    # What each unit may decode at most, for the compile choice: each row's own limit, read now.
    decode = [0] * len(units) if embeds else unit_decode_tokens(spec, shards, units, routes)
    units = [replace(u, decode_tokens=t) for u, t in zip(units, decode)]
    return Plan(
        fingerprint=fingerprint(parts),
        parts=parts,
        id_column=spec.input.id_column,
        units=units,
        input_rows=sum(s.num_rows for s in shards),
        models=sources or {},
    )
