"""The steps of one unit of work, in one place: how exactly-once is kept.

No Ray and no engine here: `generate` is any function from a unit's prompts to result columns
(operators/generate.py's GenerateOperator in an engine actor, a fake one in tests), so every
step can be tested in seconds, with faults injected, against a real output folder.

For each unit an actor is handed (pipelines/engine/actor.py), in order:
 1. stop requested   the run was asked to stop (budget): take nothing new
 2. held elsewhere   a live actor of another run has an open attempt at it: leave it to that
                     run (the driver waits for it) instead of racing it
 3. committed        another run, or an attempt thought lost, committed it: spend nothing
 4. exhausted        it failed or was lost on `compute.max_attempts` attempts: commit its rows
                     as error records (engine_error, preempted_exhausted), so the run can end
 5. claim            the attempt's start record, created under the next attempt number with
                     an exclusive create: of two actors that saw the same attempts, one wins
                     and the other leaves the unit (so two runs never generate it twice)
 6. generate         the unit's rows, sharing the engine with the actor's other units, or alone
                     if its last attempt died in company; a failure is recorded as the attempt's
                     end, with how many units it took down, and raised
 7. commit or merge  while the output still holds this run (its fingerprint); the storage
                     refuses a second commit (pipelines/store/output.py); in a `--retry-failed`
                     run the retried rows are merged into the committed unit, conditionally
 8. share            what the engine generated goes to the response cache, once committed
 9. end              the attempt's end record: committed, already committed, superseded, or
                     failed (with `storage_error` when the storage failed it)

A fault of the storage at any step fails the attempt and the unit is tried again, a few
times, in place; one that persists leaves the unit pending and the run goes on.

The parts are pipelines/unit/'s: who runs the unit (context.py), its earlier attempts
(attempts.py), its requests' keys and the cache (requests.py), its commit (commits.py) and
what became of it (outcome.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa

from operators.engine_turns import EngineTurns
from operators.failures import STORAGE_ERROR
from operators.generate import RowBatch
from pipelines.cache.response_cache import ResponseCache
from pipelines.stops.stopping import StopFlag
from pipelines.store.adapter_costs import adapter_tokens
from pipelines.store.counts import UnitCounts
from pipelines.store.output import OutputStore
from pipelines.store.record_types import ABSENT, AttemptEnd, AttemptOutcome, AttemptStart
from pipelines.store.records import COMMITTED_AT, COMMITTED_BY, Records
from pipelines.stream.unit_rows import ERROR, ID, MAX_TOKENS, PROMPT
from pipelines.unit.attempts import Attempts, died_in_company, exhausted, stall_seconds
from pipelines.unit.commits import UnitCommits, result_table, row_adapters
from pipelines.unit.context import UnitContext
from pipelines.unit.outcome import (
    SKIP_COMMITTED,
    SKIP_HELD,
    SKIP_STOP,
    SUMMARY_SCHEMA,
    SUPERSEDED,
    Skip,
    UnitOutcome,
    outcome_from_row,
    outcome_row,
)
from pipelines.unit.requests import UnitRequests, adapter_cache_keys, model_cache_key, row_samplings

__all__ = ["SKIP_COMMITTED", "SKIP_HELD", "SKIP_STOP", "STORAGE_ERROR", "SUMMARY_SCHEMA",
           "SUPERSEDED", "Skip", "StorageFault", "UnitContext", "UnitOutcome", "UnitProtocol", "died_in_company",
           "adapter_cache_keys", "model_cache_key", "outcome_from_row", "outcome_row", "row_samplings",
           "stall_seconds", "storage"]

log = logging.getLogger("spotbatch.unit")

UNREAD_END_ORDER = ("outcome", "error_class", "error", "time")  # as that end record was always written

STORAGE_TRIES = 3  # attempts at a unit whose storage keeps failing, before it is left pending
STORAGE_BACKOFF_SECONDS = 2.0  # pause before the 2nd try, doubled for each one after


class StorageFault(Exception):
    """The storage failed a step of the protocol; says which step, and what the storage said."""


@contextmanager
def storage(step: str) -> Iterator[None]:
    """Faults raised by the storage inside become StorageFault, naming the step."""
    try:
        yield
    except StorageFault:
        raise
    except Exception as err:
        raise StorageFault(f"{STORAGE_ERROR} while {step}: {err!r}"[:2000]) from err


# What one generate call answers: the unit's prompts, each row's prior error, per-row
# max_tokens, request keys, and cached answers by key -> result columns (RESULT_SCHEMA).
Generate = Callable[..., dict[str, list]]


class UnitProtocol:
    """Runs the steps above for one actor. Thread-safe: an actor runs several units at once."""

    def __init__(self, context: UnitContext, generate: Generate, *, store: OutputStore | None = None,
                 cache: ResponseCache | None = None, turns: EngineTurns | None = None):
        """`store`: the run's output (by default, the spec's); `turns`: the actor's, as units
        share its engine and a suspect runs alone."""
        spec = context.spec
        self.context = context
        self.generate = generate
        self.store = store or OutputStore(spec.output.path, spec.output.storage_options)
        self.records = Records(self.store)
        self.requests = UnitRequests(spec, cache, context.model_key, context.adapter_keys)
        self.commits = UnitCommits(context, self.store)
        self.turns = turns or EngineTurns()
        self._stop = StopFlag(self.records, context.run_id)

    def stopped(self) -> str | None:
        """Why the run was asked to stop, as last read (at most a second ago), or None: for a
        unit that would only wait; the claim itself reads the stop record afresh (step 1)."""
        return self._stop.reason()

    def request_keys(self, prompts: list[str | None], max_tokens: list[int | None],
                     samplings: list[dict | None] | None = None) -> list[str | None]:
        """The keys of these requests (pipelines/unit/requests.py)."""
        return self.requests.keys(prompts, max_tokens, samplings)

    # -- the steps, in order --------------------------------------------------------------
    def run(self, unit_id: str, rows: pa.Table) -> UnitOutcome:
        """`rows`: the unit's rows as pipelines/stream/unit_rows.py reads them (ID, PROMPT, ERROR, MAX_TOKENS).

        A fault of the storage (an S3 error past s3fs's retries, a full disk) fails this
        attempt, recorded as `storage_error`, and the unit is tried again here after a pause;
        if it persists, the unit is left pending and the run goes on without it. An engine
        fault (from `generate`) is recorded and raised: the actor decides what it means."""
        fault: StorageFault | None = None
        for n in range(STORAGE_TRIES):
            if n:
                time.sleep(STORAGE_BACKOFF_SECONDS * 2 ** (n - 1))
            try:
                return self._attempt(unit_id, rows)
            except StorageFault as err:
                fault = err
                log.warning("unit %s: %s (try %d of %d)", unit_id, err, n + 1, STORAGE_TRIES)
        return UnitOutcome.skipped_as(unit_id, Skip.STORAGE_ERROR, str(fault), shown=f"{STORAGE_ERROR}: {fault}")

    def _attempt(self, unit_id: str, rows: pa.Table) -> UnitOutcome:
        """Steps 1 to 5, then the attempt (_generate)."""
        ctx = self.context
        with storage("reading the stop request"):
            stop = self.records.stop_requested(ctx.run_id)
        if stop:
            return UnitOutcome.skipped_as(unit_id, Skip.STOP, stop)
        with storage("reading the unit's attempts"):
            attempts = self.records.unit_attempts(unit_id)
            if self.records.open_elsewhere(attempts, ctx.run_id, stall_seconds(ctx.spec)):
                return UnitOutcome.skipped_as(unit_id, Skip.HELD)
            if not ctx.retry and self.store.is_committed(unit_id):
                return UnitOutcome.skipped_as(unit_id, Skip.COMMITTED)
        given_up = exhausted(attempts, ctx.spec, ctx.run_id if ctx.retry else None)
        if given_up:
            with storage("committing the unit's error records"):
                return self.commits.failed(unit_id, rows, *given_up)
        with storage("claiming the unit (its attempt's start record)"):
            attempt = self.records.claim_attempt(unit_id, attempts, AttemptStart(
                actor_id=ctx.actor_id, run_id=ctx.run_id, node=ctx.node_id, pid=os.getpid(), time=time.time()))
        if attempt is None:  # another actor claimed it between our look and our claim
            return UnitOutcome.skipped_as(unit_id, Skip.HELD)
        return self._generate(unit_id, rows, attempts, attempt)

    def _generate(self, unit_id: str, rows: pa.Table, attempts: Attempts, attempt: str) -> UnitOutcome:
        """Steps 6 to 9: generate the unit's rows, commit them, share them, end the attempt."""
        started = time.monotonic()
        in_engine = 1
        try:
            prompts, max_tokens = rows.column(PROMPT).to_pylist(), rows.column(MAX_TOKENS).to_pylist()
            samplings = row_samplings(rows)
            keys = self.requests.keys(prompts, max_tokens, samplings)
            cached = self.requests.cached(keys)
            with self.turns.alone() if died_in_company(attempts) else self.turns.shared() as turn:
                try:
                    batch = RowBatch(prompts, rows.column(ERROR).to_pylist(), max_tokens, keys, samplings)
                    cols = self.generate(batch, cached=cached)
                except BaseException:
                    in_engine = turn.company  # how many units were in the engine with it
                    raise
            counts = UnitCounts.of_results(cols, time.monotonic() - started)
            adapters = row_adapters(rows)
            table = result_table(self.context, rows.column(ID), cols, adapters)
            with storage("committing the unit"):
                # The footer names the attempt: if its node or driver dies before the end record
                # is written, the records still tell which attempt committed (Records.settled_attempts).
                outcome = self.commits.if_current(unit_id, table, counts,
                                                  {COMMITTED_BY: attempt, COMMITTED_AT: time.time()})
        except BaseException as err:
            # Recorded, then raised: the unit is retried, and status shows why it failed.
            self._end(unit_id, attempt, AttemptEnd(
                outcome=AttemptOutcome.FAILED, error=repr(err)[:2000], time=time.time(), in_engine=in_engine,
                error_class=STORAGE_ERROR if isinstance(err, StorageFault) else ABSENT))
            raise
        if outcome is AttemptOutcome.COMMITTED:
            self.requests.share(keys, cols)
        self._end(unit_id, attempt, AttemptEnd(outcome=outcome, time=time.time(), counts=counts.to_json(),
                                               engine=self.context.engine_stats(),
                                               storage_requests=self.context.storage_requests(),
                                               adapter_tokens=adapter_tokens(cols, adapters)
                                               if self.context.spec.model.adapters else ABSENT))
        if outcome is AttemptOutcome.SUPERSEDED:
            return UnitOutcome.skipped_as(unit_id, Skip.SUPERSEDED, **counts.to_json())
        return UnitOutcome(**counts.to_json(), unit_id=unit_id, committed=outcome is AttemptOutcome.COMMITTED)

    def unreadable(self, unit_id: str, why: Skip, message: str) -> UnitOutcome:
        """The unit's rows could not be read (pipelines/stream/unit_rows.py): its shard changed since
        planning (Skip.INPUT_CHANGED; the run's fingerprint then refuses a resume on the changed
        input, so two versions never mix), or the storage kept failing (Skip.STORAGE_ERROR).
        Record an attempt that failed so, generate nothing, and leave the unit pending."""
        ctx = self.context
        try:
            attempt = self.records.claim_attempt(unit_id, self.records.unit_attempts(unit_id), AttemptStart(
                actor_id=ctx.actor_id, run_id=ctx.run_id, node=ctx.node_id, time=time.time()))
        except Exception as err:  # the record is for status only: the unit stays pending either way
            log.warning("could not record why unit %s was not read: %r", unit_id, err)
            attempt = None
        if attempt is not None:
            self._end(unit_id, attempt, AttemptEnd(outcome=AttemptOutcome.FAILED, error_class=why.value, error=message,
                                                   time=time.time(), key_order=UNREAD_END_ORDER))
        return UnitOutcome.skipped_as(unit_id, why, message, shown=message)

    def _end(self, unit_id: str, attempt: str, outcome: AttemptEnd) -> None:
        """The attempt's end record. Failing to write it changes no result: the attempt then
        reads as lost, and is counted as such, which errs on the side of retrying."""
        try:
            self.records.end_attempt(unit_id, attempt, outcome)
        except Exception as err:
            log.warning("could not record the end of unit %s's attempt: %r", unit_id, err)
