"""What became of a unit handed to an engine actor, and the summary row that carries it to the
driver (pipelines/unit_protocol.py makes it; pipelines/run.py counts it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines.store.counts import UnitCounts, counts_fields, counts_from_row, counts_row

# Why a unit was not run by this actor (UnitOutcome.skipped).
SKIP_COMMITTED = "committed"
SKIP_HELD = "held by another run"
SKIP_STOP = "stop: "  # + the reason (budget)
SUPERSEDED = "superseded"  # generated, but its run was moved aside by --new-run: never a result


@dataclass
class UnitOutcome(UnitCounts):
    """What became of one unit handed to an actor."""

    unit_id: str = ""
    skipped: str | None = None  # why it was not run: SKIP_COMMITTED, SKIP_HELD, SKIP_STOP + reason
    committed: bool = False  # this attempt committed (or merged) it


# The row an engine actor returns to the driver for each unit: who ran it, at what price
# (for the live dollar figure), and its outcome.
ACTOR_FIELDS = [pa.field("actor_id", pa.string()), pa.field("actor_started_at", pa.float64()),
                pa.field("actor_usd_per_second", pa.float64())]
SUMMARY_SCHEMA = pa.schema([pa.field("unit_id", pa.string()), *ACTOR_FIELDS, pa.field("skipped", pa.string()),
                            pa.field("committed", pa.bool_()), pa.field("held", pa.bool_()), *counts_fields()])


def outcome_row(outcome: UnitOutcome, actor: dict[str, Any], held: bool = False) -> dict[str, Any]:
    """A unit's summary row; `held`: it was in the engine actor's hands (pipelines/stops/drain.py)."""
    return {**counts_row(outcome), "unit_id": outcome.unit_id, "skipped": outcome.skipped,
            "committed": outcome.committed, "held": held, **actor}


def outcome_from_row(row: dict[str, Any]) -> UnitOutcome:
    return UnitOutcome(**counts_from_row(row).to_json(), unit_id=row["unit_id"], skipped=row["skipped"],
                       committed=row["committed"])
