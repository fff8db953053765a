"""What an output folder holds: read from the manifest, unit footers and attempt records only,
so its cost grows with units, never with rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipelines.redact import redact_url
from pipelines.stops.stopping import describe_stop
from pipelines.store.counts import UnitCounts
from pipelines.store.output import OutputStore
from pipelines.store.record_types import AttemptOutcome, attempt_outcome
from pipelines.store.records import Records


@dataclass
class RunStatus:
    output: str
    fingerprint: str
    units_total: int
    units_committed: int
    units_pending: int
    units_failed: int  # pending units whose latest attempt ended in an error
    units_retried: int  # units attempted more than once (lost nodes, dead drivers, errors)
    attempts: int
    attempts_lost: int  # attempts that never ended: their node or driver died under them
    rows_total: int
    rows_done: int
    rows_failed: int  # committed rows that are error records
    rows_failed_by_class: dict[str, int]  # operators/failures.py: bad_input, context_too_long, ...
    rows_reused: int  # answered by a duplicate in the run or by the response cache
    prompt_tokens: int  # what the engine processed (reused rows not counted)
    completion_tokens: int
    finished: bool
    stopped: str | None  # why the latest run of an unfinished output stopped early: budget, deadline, cancelled
    reasoning_tokens: int = 0  # of completion_tokens, the thinking a reasoning parser kept apart
    cached_prompt_tokens: int = 0  # of prompt_tokens, those the engine's prefix cache already held

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_status(path: str, storage_options: dict[str, Any] | None = None) -> RunStatus:
    store = OutputStore(path, storage_options)
    manifest = store.require_manifest()
    planned = {u["unit_id"] for u in manifest["units"]}
    committed = store.committed_units() & planned
    done = UnitCounts.total([UnitCounts.from_json(s) for s in store.unit_stats_many(sorted(committed))])
    records = Records(store)
    attempts = records.settled_attempts()
    failed = 0
    for unit_id in planned - committed:
        tries = attempts.get(unit_id, {})
        if tries and attempt_outcome(tries[max(tries)]) is AttemptOutcome.FAILED:
            failed += 1
    all_attempts = [a for tries in attempts.values() for a in tries.values()]
    return RunStatus(
        output=redact_url(path),
        fingerprint=manifest["fingerprint"],
        units_total=len(planned),
        units_committed=len(committed),
        units_pending=len(planned) - len(committed),
        units_failed=failed,
        units_retried=sum(1 for tries in attempts.values() if len(tries) > 1),
        attempts=len(all_attempts),
        attempts_lost=sum(1 for a in all_attempts if "end" not in a),
        rows_total=manifest["input_rows"],
        rows_done=done.rows,
        rows_failed=done.errors,
        rows_failed_by_class=dict(sorted(done.errors_by_class.items())),
        rows_reused=done.reused_rows,
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        finished=committed == planned,
        stopped=None if committed == planned else last_stop(records),
        reasoning_tokens=done.reasoning_tokens,
        cached_prompt_tokens=done.cached_prompt_tokens,
    )


def last_stop(records: Records) -> str | None:
    """Why the latest run stopped early, if it did (pipelines/stops/stopping.py)."""
    runs = sorted(records.runs().values(), key=lambda r: r.get("started_at") or 0.0)
    return runs[-1].get("stopped") if runs else None


def format_status(s: RunStatus) -> str:
    state = ("finished" if s.finished else f"not finished, {describe_stop(s.stopped)}" if s.stopped
             else "not finished (run the same spec again to resume)")
    return (
        f"{s.output}: {state}\n"
        f"units: {s.units_committed}/{s.units_total} committed, {s.units_pending} pending "
        f"({s.units_failed} failed on their last attempt), {s.units_retried} retried\n"
        f"attempts: {s.attempts} ({s.attempts_lost} lost with their node or driver)\n"
        f"rows: {s.rows_done:,}/{s.rows_total:,} done: {s.rows_done - s.rows_failed:,} completed, "
        f"{s.rows_failed:,} failed"
        + (" (" + ", ".join(f"{c} {n:,}" for c, n in s.rows_failed_by_class.items()) + ")" if s.rows_failed else "")
        + (f", {s.rows_reused:,} answered by a duplicate or the cache" if s.rows_reused else "") + "\n"
        f"tokens: {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion"
        + (f" ({s.reasoning_tokens:,} of them reasoning)" if s.reasoning_tokens else "")
    )
