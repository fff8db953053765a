"""What a unit's earlier attempts (pipelines/store/records.py) say about the next one: whether
it must run alone, whether it is still held, and whether it has had all its tries."""

from __future__ import annotations

from typing import Any

from operators.failures import ENGINE_ERROR, INPUT_CHANGED, PREEMPTED_EXHAUSTED, STORAGE_ERROR
from pipelines.spec import PipelineSpec
from pipelines.store.record_types import AttemptOutcome, attempt_outcome
from pipelines.store.records import STALL_SECONDS

Attempts = dict[str, dict[str, Any]]  # attempt -> {"start": ..., "end": ...} (Records.unit_attempts)


def died_in_company(attempts: Attempts) -> bool:
    """Whether the unit's last attempt failed while other units were in the same engine: the
    next one runs alone (operators/engine_turns.py), to tell the culprit from its neighbours."""
    ended = [attempts[a] for a in sorted(attempts) if "end" in attempts[a]]
    return bool(ended) and attempt_outcome(ended[-1]) is AttemptOutcome.FAILED \
        and ended[-1]["end"].get("in_engine", 1) > 1


def stall_seconds(spec: PipelineSpec) -> float:
    """How long an engine may make no step on a unit before the unit is no longer held."""
    return spec.compute.request_timeout_seconds or STALL_SECONDS


def exhausted(attempts: Attempts, spec: PipelineSpec, retry_of: str | None = None) -> tuple[str, str] | None:
    """(class, message) when the unit failed or was lost on every allowed attempt;
    `retry_of`: the run id of a `--retry-failed` run, whose tries alone count (a retry starts afresh)."""
    tries = [t for t in attempts.values() if "start" in t
             and (retry_of is None or t["start"].get("run_id") == retry_of)]
    failed = [t["end"] for t in tries if attempt_outcome(t) is AttemptOutcome.FAILED
              and t["end"].get("error_class") not in (STORAGE_ERROR, INPUT_CHANGED)]  # not the unit's fault
    alone = [f for f in failed if f.get("in_engine", 1) <= 1]
    # A death in company is not held against the unit (it runs alone next), unless there
    # are so many that something else is wrong.
    max_attempts = spec.compute.max_attempts
    failed = alone if len(failed) < 2 * max_attempts else failed
    lost = [t for t in tries if "end" not in t]
    if len(failed) + len(lost) < max_attempts:
        return None
    if failed:
        return ENGINE_ERROR, (f"the engine failed on this row's unit {len(failed)} times "
                              f"({len(lost)} more lost); last: {failed[-1].get('error', '')[:500]}")
    return PREEMPTED_EXHAUSTED, f"this row's unit was lost with its node {len(lost)} times"
