"""The records a run keeps (pipelines/store/records.py says where), as typed objects whose JSON
is exactly what was always written: the same keys, values and order.

Reading is tolerant: a key a record never had is ABSENT (and not written back), a key this
version does not know is kept in `extra`, and a record read from a file is written back in
the order its keys came in, so an output written before any of this resumes unchanged.
Fields without a default are always written; every other one may be ABSENT. Fields are
declared in the order the record's writer writes its keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from pipelines.store.counts import UnitCounts

NODE_KEYS = ("node_id", "instance_type", "market", "usd_per_hour", "on_demand_usd_per_hour", "price_source",
             "share")  # cluster/node_facts.py's NodeFacts, flat in an actor record
COUNT_KEYS = tuple(f.name for f in fields(UnitCounts))  # flat in an attempt's end record


class _Absent:
    """A key the record does not have (None is a value some records hold: `ended_at`)."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self):
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass
class JsonRecord:
    FLAT: ClassVar[dict[str, tuple[str, ...]]] = {}  # a field written as these keys of its own dict, in place

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    """Keys this version does not know, kept as they were."""
    key_order: tuple[str, ...] = field(default=(), kw_only=True, compare=False, repr=False)
    """The order the keys were read in (from_json), kept when written back."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "key_order") or value is ABSENT:
                continue
            if f.name in self.FLAT:
                data.update(value)
            else:
                data[f.name] = value
        data.update(self.extra)
        if not self.key_order:
            return data
        order = [k for k in self.key_order if k in data]
        return {k: data[k] for k in order + [k for k in data if k not in self.key_order]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JsonRecord:
        known: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("extra", "key_order"):
                continue
            if f.name in cls.FLAT:
                flat = {k: data[k] for k in cls.FLAT[f.name] if k in data}
                known[f.name] = flat or ABSENT
            else:  # a key an older writer did not write yet is ABSENT
                known[f.name] = data.get(f.name, ABSENT)
        taken = {k for name in known for k in cls.FLAT.get(name, (name,))}
        return cls(**known, extra={k: v for k, v in data.items() if k not in taken}, key_order=tuple(data))


@dataclass(kw_only=True)
class AttemptStart(JsonRecord):
    """An attempt's start record, created exclusively: the claim on the unit (_spotbatch/attempts/)."""

    actor_id: str
    run_id: str
    node: str  # the node's id
    pid: int = ABSENT  # absent from an attempt at a unit whose rows could not be read
    time: float = ABSENT


class AttemptOutcome(StrEnum):
    """How an attempt ended; the value is what its end record's `outcome` says."""

    COMMITTED = "committed"  # it committed (or merged) its unit
    ALREADY_COMMITTED = "already committed"  # it generated, and the storage refused a second commit
    SUPERSEDED = "superseded"  # it generated, but its run was moved aside by --new-run: never a result
    FAILED = "failed"  # the engine or the storage failed it, or its rows could not be read


def attempt_outcome(attempt: dict[str, Any]) -> AttemptOutcome | None:
    """How an attempt read from the records (`{"start": ..., "end": ...}`) ended; None while it
    has no end record, or an outcome this version does not know (a newer writer's)."""
    try:
        return AttemptOutcome((attempt.get("end") or {}).get("outcome"))
    except ValueError:
        return None


@dataclass(kw_only=True)
class AttemptEnd(JsonRecord):
    """How an attempt ended (AttemptOutcome), and what it cost."""

    FLAT: ClassVar[dict[str, tuple[str, ...]]] = {"counts": COUNT_KEYS}

    outcome: AttemptOutcome
    error: str = ABSENT
    time: float = ABSENT
    in_engine: int = ABSENT  # how many units were in the engine when it failed
    error_class: str = ABSENT  # a failure that is not the unit's: storage_error, input_changed
    counts: dict[str, Any] = ABSENT  # pipelines/store/counts.py's UnitCounts, flat
    engine: dict[str, Any] = ABSENT  # the engine's figures (operators/feeder.py's FeederStats)
    storage_requests: dict[str, int] = ABSENT
    adapter_tokens: dict[str, list[int]] = ABSENT  # with model.adapters: pipelines/store/adapter_costs.py's


@dataclass(kw_only=True)
class ActorRecord(JsonRecord):
    """An engine actor's record for one run it serves (_spotbatch/actors/<actor>.json)."""

    FLAT: ClassVar[dict[str, tuple[str, ...]]] = {"node": NODE_KEYS}

    beat_seconds: float = ABSENT
    engine_id: str = ABSENT
    run_id: str = ABSENT
    pid: int = ABSENT
    started_at: float
    loaded_at: float = ABSENT
    niceness: int = ABSENT
    model: str = ABSENT  # redacted, or a routed model's name
    model_source: dict[str, Any] = ABSENT  # how the weights got to the node
    loaded_dtype: str = ABSENT
    compile: dict[str, Any] = ABSENT  # the driver's compile choice and what the start cost
    node: dict[str, Any] = ABSENT  # cluster/node_facts.py's NodeFacts, flat
    warm: dict[str, Any] = ABSENT  # a warm engine bound to this run: since when it waited


@dataclass(kw_only=True)
class BeatRecord(JsonRecord):
    """An actor's beat, rewritten while it lives (_spotbatch/actors/<actor>.beat.json)."""

    time: float
    period: float = ABSENT
    engine: dict[str, Any] = ABSENT  # the engine's figures so far
    notice: str = ABSENT  # a spot notice came
    drained: str = ABSENT  # it left after one
    storage_requests: dict[str, int] = ABSENT
    warm_until: float = ABSENT  # a warm engine released (pipelines/engine/warm_pool.py)


@dataclass(kw_only=True)
class RunRecord(JsonRecord):
    """One invocation of `spotbatch run` (_spotbatch/runs/<run>.json)."""

    invoked_at: float = ABSENT
    started_at: float
    pid: int = ABSENT
    host: str = ABSENT
    units_pending: int = ABSENT
    ended_at: float | None = ABSENT
    stopped: str | None = ABSENT
    max_cost_usd: float | None = ABSENT
    reference: dict[str, Any] | None = ABSENT
    deadline: float | None = ABSENT
    ray_ready_at: float = ABSENT
    storage_requests: dict[str, int] = ABSENT
