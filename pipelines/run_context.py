"""What the driver side of one run carries from its plan to its summary, in one frozen object
instead of a dozen parameters handed down from function to function.

`Invocation` is how the caller asked (pipelines.run.run, or --retry-failed: pipelines/retry.py);
`RunContext` adds what the run is (spec, plan, output, the units it sets out to commit) and, once
its record is written, who it is (run id, record, monitor).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipelines.planning.units import Plan, Unit
from pipelines.run_summary import RunSummary
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.record_types import RunRecord
from pipelines.store.records import Records

if TYPE_CHECKING:
    import pyarrow as pa

    from pipelines.progress import RunMonitor
    from pipelines.stops.control import RunControl


@dataclass(frozen=True)
class Invocation:
    """How this invocation of a run was asked for."""

    address: str | None = None
    """A Ray cluster's address; None: cluster/session.py finds one."""
    interactive: bool | None = None
    """Show progress as a person at a terminal or a notebook would see it (None: find out)."""
    verbose: bool | None = None
    """Ray's and vLLM's log lines here, instead of in a file (cluster/console.py)."""
    control: RunControl | None = None
    """How a caller in this process stops the run and reads its progress (pipelines/stops/control.py)."""
    only_ids: dict[str, pa.Array] | None = None
    """--retry-failed: unit -> the ids of its rows to run again; None: every row of each unit."""
    started: float | None = None
    """time.monotonic() when the invocation began (planning included); None: now."""
    requests_before: dict[str, int] | None = None
    """The driver's S3 request counts before planning (cluster/storage_requests.py); None: now."""


@dataclass(frozen=True)
class RunContext:
    """One run of a planned output, as the driver streams it."""

    spec: PipelineSpec
    plan: Plan
    store: OutputStore
    pending: list[Unit]
    """The units this invocation sets out to commit (or, with only_ids, to merge)."""
    invocation: Invocation
    summary: RunSummary
    """What the run did so far: filled as units come back."""
    records: Records
    run_id: str
    run_record: RunRecord = field(default_factory=lambda: RunRecord(started_at=time.time()))
    """The run's own record (pipelines/store/records.py), rewritten as the run goes."""
    monitor: RunMonitor | None = None
    """The run's progress and stop, once it watches (pipelines/progress.py)."""

    @property
    def only_ids(self) -> dict[str, pa.Array] | None:
        return self.invocation.only_ids

    def stopped(self) -> bool:
        """Whether the run was asked to stop (a budget, a deadline, a cancel)."""
        return self.monitor is not None and self.monitor.stopped is not None
