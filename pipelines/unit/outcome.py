"""What became of a unit handed to an engine actor, and the summary row that carries it to the
driver (pipelines/unit/protocol.py makes it; pipelines/run.py counts it)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa

from operators.failures import INPUT_CHANGED, STORAGE_ERROR
from pipelines.store.counts import UnitCounts, counts_fields, counts_from_row, counts_row


class Skip(StrEnum):
    """Why a unit was not run (or not kept) by the actor it was handed to; the value is what the
    run's summary counts it under."""

    COMMITTED = "committed"  # another run, or an attempt thought lost, committed it
    HELD = "held by another run"  # a live actor of another run has it: the driver waits for it
    STOP = "stop"  # the run was asked to stop (budget, deadline, cancel)
    SUPERSEDED = "superseded"  # generated, but its run was moved aside by --new-run: never a result
    STORAGE_ERROR = STORAGE_ERROR  # the storage kept failing it: left pending
    INPUT_CHANGED = INPUT_CHANGED  # its shard changed since planning: left pending


# How a skip reads (UnitOutcome.skipped), for people and tests.
SKIP_COMMITTED = Skip.COMMITTED.value
SKIP_HELD = Skip.HELD.value
SKIP_STOP = f"{Skip.STOP.value}: "  # + the reason (budget)
SUPERSEDED = Skip.SUPERSEDED.value


@dataclass
class UnitOutcome(UnitCounts):
    """What became of one unit handed to an actor."""

    unit_id: str = ""
    skipped: str | None = None  # why it was not run, as it reads: SKIP_COMMITTED, SKIP_STOP + reason, ...
    committed: bool = False  # this attempt committed (or merged) it
    skip: Skip | None = None  # why it was not run, as a kind (what the driver acts on)
    reason: str | None = None  # the skip's own words: a stop's reason, the storage's fault

    @classmethod
    def skipped_as(cls, unit_id: str, skip: Skip, reason: str | None = None, shown: str | None = None,
                   **counts: Any) -> UnitOutcome:
        """A unit skipped for `skip`; it reads as `shown`, by default the kind (and a stop's reason)."""
        if shown is None:
            shown = SKIP_STOP + (reason or "") if skip is Skip.STOP else skip.value
        return cls(**counts, unit_id=unit_id, skipped=shown, skip=skip, reason=reason)


# The row an engine actor returns to the driver for each unit: who ran it, at what price
# (for the live dollar figure), and its outcome.
ACTOR_FIELDS = [pa.field("actor_id", pa.string()), pa.field("actor_started_at", pa.float64()),
                pa.field("actor_usd_per_second", pa.float64())]
SUMMARY_SCHEMA = pa.schema([pa.field("unit_id", pa.string()), *ACTOR_FIELDS, pa.field("skipped", pa.string()),
                            pa.field("committed", pa.bool_()), pa.field("held", pa.bool_()), *counts_fields(),
                            pa.field("skip", pa.string()), pa.field("skip_reason", pa.string())])


def outcome_row(outcome: UnitOutcome, actor: dict[str, Any], held: bool = False) -> dict[str, Any]:
    """A unit's summary row; `held`: it was in the engine actor's hands (pipelines/stops/drain.py)."""
    return {**counts_row(outcome), "unit_id": outcome.unit_id, "skipped": outcome.skipped,
            "committed": outcome.committed, "held": held, **actor,
            "skip": outcome.skip.value if outcome.skip else None, "skip_reason": outcome.reason}


def outcome_from_row(row: dict[str, Any]) -> UnitOutcome:
    skip = row.get("skip")
    return UnitOutcome(**counts_from_row(row).to_json(), unit_id=row["unit_id"], skipped=row["skipped"],
                       committed=row["committed"], skip=Skip(skip) if skip else None, reason=row.get("skip_reason"))
