"""What a batch's page adds to its line: its run's errors by class and its engines (which
nodes, spot or on-demand, what each cost, which were lost with their node), read from the run's
status and ledger as `spotbatch status` and `spotbatch report` read them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from server.state import State


@dataclass
class Engine:
    actor_id: str
    node: str
    instance_type: str
    market: str  # spot or on-demand
    model: str
    started_at: float
    usd: float
    alive: bool
    units_lost: int  # its attempts that never ended because it (its node) went away


@dataclass
class RunDetail:
    errors_by_class: dict[str, int] = field(default_factory=dict)
    engines: list[Engine] = field(default_factory=list)
    attempts_lost: int = 0  # work lost with a node or a driver, and done again

    @property
    def preemptions_survived(self) -> int:
        return sum(1 for e in self.engines if not e.alive and e.units_lost)


@dataclass
class RunRead:
    """A run's status and ledger, read once for a view: its figures and its detail both come from it."""

    store: Any  # OutputStore
    status: Any  # pipelines.store.status.RunStatus
    ledger: Any  # pipelines.store.ledger's, at `now`
    now: float


def read_run(state: State, tenant: str, batch_id: str) -> RunRead | None:
    """The run's status and ledger; None before the run is planned (validating, or failed validation)."""
    from jobs.report import latest_reference
    from pipelines.store.ledger import compute_ledger
    from pipelines.store.output import OutputStore
    from pipelines.store.status import run_status

    url = state.run_url(tenant, batch_id)
    store = OutputStore(url, state.storage_options)
    if store.read_manifest() is None:
        return None
    now = time.time()
    return RunRead(store, run_status(url, state.storage_options), compute_ledger(store, latest_reference(store),
                                                                                 now=now), now)


def run_detail(state: State, tenant: str, batch_id: str, read: RunRead | None = None) -> RunDetail:
    """The run's detail (from `read` when the caller has read the run already); empty before the
    run is planned."""
    from pipelines.store.records import Records

    read = read or read_run(state, tenant, batch_id)
    if read is None:
        return RunDetail()
    actors = read.ledger.actors.to_pylist()
    unended = _unended_attempts(Records(read.store).settled_attempts())
    engines = [_engine(row, read.now, unended.get(row["actor_id"], 0)) for row in actors]
    return RunDetail(errors_by_class=dict(read.status.rows_failed_by_class), engines=engines,
                     attempts_lost=read.status.attempts_lost)


def _unended_attempts(attempts: dict[str, dict[str, dict[str, Any]]]) -> dict[str, int]:
    """actor -> its attempts with no end record (in flight, or lost with it)."""
    found: dict[str, int] = {}
    for tries in attempts.values():
        for attempt in tries.values():
            actor = (attempt.get("start") or {}).get("actor_id")
            if actor and "end" not in attempt:
                found[actor] = found.get(actor, 0) + 1
    return found


def _engine(row: dict[str, Any], now: float, unended: int) -> Engine:
    alive = row["ended_at"] >= now - 1  # the ledger ends a live actor at `now`
    return Engine(actor_id=row["actor_id"], node=row.get("node_id") or "", instance_type=row.get("instance_type") or "",
                  market=row.get("market") or "", model=row.get("model") or "", started_at=row["started_at"],
                  usd=row["usd_total"], alive=alive, units_lost=0 if alive else unended)
