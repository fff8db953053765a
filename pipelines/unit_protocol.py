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
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from operators.engine_turns import EngineTurns
from operators.failures import BAD_INPUT, ENGINE_ERROR, INPUT_CHANGED, PREEMPTED_EXHAUSTED, STORAGE_ERROR
from operators.generate import RESULT_SCHEMA, RowBatch, conform, empty_results
from pipelines.cache.response_cache import ANSWER_COLUMNS, ResponseCache, request_key
from pipelines.planning.units import model_identity
from pipelines.redact import redact_url
from pipelines.spec import PipelineSpec, sampling_identity
from pipelines.stops.stopping import StopFlag
from pipelines.store.counts import ENGINE, UnitCounts, counts_fields, counts_from_row, counts_row
from pipelines.store.output import STATS_KEY, OutputStore
from pipelines.store.records import COMMITTED_AT, COMMITTED_BY, STALL_SECONDS, Records
from pipelines.stream.unit_rows import ERROR, ID, MAX_TOKENS, PROMPT, SAMPLING

log = logging.getLogger("spotbatch.unit")

# Why a unit was not run by this actor (UnitOutcome.skipped).
SKIP_COMMITTED = "committed"
SKIP_HELD = "held by another run"
SKIP_STOP = "stop: "  # + the reason (budget)
SUPERSEDED = "superseded"  # generated, but its run was moved aside by --new-run: never a result

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


def row_samplings(rows: pa.Table) -> list[dict[str, Any] | None] | None:
    """Each row's own sampling (every field, pipelines/stream/unit_rows.py), or None for a run without."""
    if SAMPLING not in rows.column_names:
        return None
    values = rows.column(SAMPLING).to_pylist()
    return [json.loads(v) if v else None for v in values] if any(values) else None


def result_table(spec: PipelineSpec, ids: pa.Array | pa.ChunkedArray, cols: dict[str, list],
                 fingerprint: str) -> pa.Table:
    """A unit's results in the output schema; the input id keeps its own name and type."""
    n = len(ids)
    return pa.table({
        spec.input.id_column: ids,
        **{f.name: pa.array(cols[f.name], f.type) for f in RESULT_SCHEMA},
        "model": pa.array([redact_url(spec.model.name)] * n, pa.string()),  # its name as written down
        "spec_fingerprint": pa.array([fingerprint] * n, pa.string()),
    })


def died_in_company(attempts: dict[str, dict[str, Any]]) -> bool:
    """Whether the unit's last attempt failed while other units were in the same engine: the
    next one runs alone (operators/engine_turns.py), to tell the culprit from its neighbours."""
    ended = [attempts[a]["end"] for a in sorted(attempts) if "end" in attempts[a]]
    return bool(ended) and ended[-1].get("outcome") == "failed" and ended[-1].get("in_engine", 1) > 1


def stall_seconds(spec: PipelineSpec) -> float:
    """How long an engine may make no step on a unit before the unit is no longer held."""
    return spec.compute.request_timeout_seconds or STALL_SECONDS


def model_cache_key(spec: PipelineSpec, source: dict | None = None, loaded_dtype: str | None = None) -> str:
    """The model part of a response-cache key: which weights, loaded how, so a shared cache
    never answers from another checkpoint or another dtype."""
    return json.dumps(model_identity(spec, source) + ([loaded_dtype] if loaded_dtype else []),
                      sort_keys=True, default=str)


class UnitProtocol:
    """Runs the steps above for one actor. Thread-safe: an actor runs several units at once."""

    def __init__(self, spec: PipelineSpec, *, fingerprint: str, run_id: str, actor_id: str, node_id: str,
                 generate: Generate, store: OutputStore | None = None, cache: ResponseCache | None = None,
                 retry: bool = False, engine_stats: Callable[[], dict] = dict, turns: EngineTurns | None = None,
                 model_key: str | None = None, storage_requests: Callable[[], dict] = dict):
        self.spec = spec
        self.fingerprint = fingerprint
        self.run_id = run_id
        self.actor_id = actor_id
        self.node_id = node_id
        self.generate = generate
        self.store = store or OutputStore(spec.output.path, spec.output.storage_options)
        self.records = Records(self.store)
        self.cache = cache
        self.retry = retry  # units are failed rows of committed units, merged back when done
        self.engine_stats = engine_stats  # the engine's figures, kept in each attempt's end record
        self.storage_requests = storage_requests  # the actor's S3 requests for this run so far (the ledger's)
        self.turns = turns or EngineTurns()  # the actor's: units share its engine, a suspect runs alone
        self.model_key = model_key if model_key is not None else model_cache_key(spec)
        self._stop = StopFlag(self.records, run_id)

    def stopped(self) -> str | None:
        """Why the run was asked to stop, as last read (at most a second ago), or None: for a
        unit that would only wait; the claim itself reads the stop record afresh (step 1)."""
        return self._stop.reason()

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
        return UnitOutcome(unit_id=unit_id, skipped=f"{STORAGE_ERROR}: {fault}")

    def _attempt(self, unit_id: str, rows: pa.Table) -> UnitOutcome:
        with storage("reading the stop request"):
            stop = self.records.stop_requested(self.run_id)
        if stop:
            return UnitOutcome(unit_id=unit_id, skipped=SKIP_STOP + stop)
        with storage("reading the unit's attempts"):
            attempts = self.records.unit_attempts(unit_id)
            if self.records.open_elsewhere(attempts, self.run_id, stall_seconds(self.spec)):
                return UnitOutcome(unit_id=unit_id, skipped=SKIP_HELD)
            if not self.retry and self.store.is_committed(unit_id):
                return UnitOutcome(unit_id=unit_id, skipped=SKIP_COMMITTED)
        exhausted = self._exhausted(attempts)
        if exhausted:
            with storage("committing the unit's error records"):
                return self._commit_failed(unit_id, rows, *exhausted)
        with storage("claiming the unit (its attempt's start record)"):
            attempt = self.records.claim_attempt(unit_id, attempts, {
                "actor_id": self.actor_id, "run_id": self.run_id, "node": self.node_id, "pid": os.getpid(),
                "time": time.time()})
        if attempt is None:  # another actor claimed it between our look and our claim
            return UnitOutcome(unit_id=unit_id, skipped=SKIP_HELD)
        started = time.monotonic()
        in_engine = 1
        try:
            prompts, max_tokens = rows.column(PROMPT).to_pylist(), rows.column(MAX_TOKENS).to_pylist()
            samplings = row_samplings(rows)
            keys = self.request_keys(prompts, max_tokens, samplings)
            cached = self._cached(keys)
            with self.turns.alone() if died_in_company(attempts) else self.turns.shared() as turn:
                try:
                    batch = RowBatch(prompts, rows.column(ERROR).to_pylist(), max_tokens, keys, samplings)
                    cols = self.generate(batch, cached=cached)
                except BaseException:
                    in_engine = turn.company  # how many units were in the engine with it
                    raise
            counts = UnitCounts.of_results(cols, time.monotonic() - started)
            table = result_table(self.spec, rows.column(ID), cols, self.fingerprint)
            with storage("committing the unit"):
                # The footer names the attempt: if its node or driver dies before the end record
                # is written, the records still tell which attempt committed (Records.settled_attempts).
                outcome = self._commit_if_current(unit_id, table, counts,
                                                  {COMMITTED_BY: attempt, COMMITTED_AT: time.time()})
        except BaseException as err:
            # Recorded, then raised: the unit is retried, and status shows why it failed.
            end = {"outcome": "failed", "error": repr(err)[:2000], "time": time.time(), "in_engine": in_engine}
            if isinstance(err, StorageFault):
                end["error_class"] = STORAGE_ERROR
            self._end(unit_id, attempt, end)
            raise
        if outcome == "committed":
            self._share(keys, cols)
        self._end(unit_id, attempt, {"outcome": outcome, "time": time.time(), **counts.to_json(),
                                     "engine": self.engine_stats(), "storage_requests": self.storage_requests()})
        if outcome == SUPERSEDED:
            return UnitOutcome(**counts.to_json(), unit_id=unit_id, skipped=SUPERSEDED)
        return UnitOutcome(**counts.to_json(), unit_id=unit_id, committed=outcome == "committed")

    def unreadable(self, unit_id: str, message: str) -> UnitOutcome:
        """The unit's rows could not be read (pipelines/stream/unit_rows.py): its shard changed since
        planning (`input_changed`; the run's fingerprint then refuses a resume on the changed
        input, so two versions never mix), or the storage kept failing (`storage_error`). Record
        an attempt that failed so, generate nothing, and leave the unit pending."""
        error_class = INPUT_CHANGED if message.startswith(INPUT_CHANGED) else STORAGE_ERROR
        try:
            attempt = self.records.claim_attempt(unit_id, self.records.unit_attempts(unit_id), {
                "actor_id": self.actor_id, "run_id": self.run_id, "node": self.node_id, "time": time.time()})
        except Exception as err:  # the record is for status only: the unit stays pending either way
            log.warning("could not record why unit %s was not read: %r", unit_id, err)
            attempt = None
        if attempt is not None:
            self._end(unit_id, attempt, {"outcome": "failed", "error_class": error_class, "error": message,
                                         "time": time.time()})
        return UnitOutcome(unit_id=unit_id, skipped=message)

    def _commit_if_current(self, unit_id: str, table: pa.Table, counts: UnitCounts,
                           by: dict[str, Any] | None = None) -> str:
        """Commit (or merge) only while the output still holds this run: a run moved aside by
        --new-run must never add to the next one, results or error records. Checked before the
        commit, and after it (the move may have come in between), when a late file is taken
        back out again."""
        if self.store.fingerprint() != self.fingerprint:
            return SUPERSEDED
        if not self._commit(unit_id, table, counts, by):
            return "already committed"
        if self.store.fingerprint() != self.fingerprint:
            moved = self.store.retract(unit_id, self.fingerprint)
            log.warning("unit %s was committed after its run was moved aside; moved to %s", unit_id, moved)
            return SUPERSEDED
        return "committed"

    def _cached(self, keys: list[str | None]) -> dict[str, dict[str, Any]]:
        """Cached answers; a cache that cannot be read only costs engine time, never the unit."""
        if not self.cache or not any(keys):
            return {}
        try:
            return self.cache.lookup(keys)
        except Exception as err:
            log.warning("could not read the response cache: %r", err)
            return {}

    def _exhausted(self, attempts: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
        """(class, message) when the unit failed or was lost on every allowed attempt."""
        tries = [t for t in attempts.values() if "start" in t
                 and (not self.retry or t["start"].get("run_id") == self.run_id)]  # a retry starts afresh
        failed = [t["end"] for t in tries if t.get("end", {}).get("outcome") == "failed"
                  and t["end"].get("error_class") not in (STORAGE_ERROR, INPUT_CHANGED)]  # not the unit's fault
        alone = [f for f in failed if f.get("in_engine", 1) <= 1]
        # A death in company is not held against the unit (it runs alone next), unless there
        # are so many that something else is wrong.
        failed = alone if len(failed) < 2 * self.spec.compute.max_attempts else failed
        lost = [t for t in tries if "end" not in t]
        if len(failed) + len(lost) < self.spec.compute.max_attempts:
            return None
        if failed:
            return ENGINE_ERROR, (f"the engine failed on this row's unit {len(failed)} times "
                                  f"({len(lost)} more lost); last: {failed[-1].get('error', '')[:500]}")
        return PREEMPTED_EXHAUSTED, f"this row's unit was lost with its node {len(lost)} times"

    def _commit_failed(self, unit_id: str, rows: pa.Table, error_class: str, message: str) -> UnitOutcome:
        """Give up on a unit: every row becomes an error record (a row that already had one keeps
        it), so the run ends and `spotbatch run --retry-failed` can try again later."""
        prior = rows.column(ERROR).to_pylist()
        cols = empty_results([p or message for p in prior])
        cols["error_class"] = [BAD_INPUT if p else error_class for p in prior]
        counts = UnitCounts.of_results(cols, 0.0)
        table = result_table(self.spec, rows.column(ID), cols, self.fingerprint)
        outcome = self._commit_if_current(unit_id, table, counts)
        if outcome == SUPERSEDED:
            return UnitOutcome(unit_id=unit_id, skipped=SUPERSEDED)
        return UnitOutcome(**counts.to_json(), unit_id=unit_id, committed=outcome == "committed")

    def _commit(self, unit_id: str, table: pa.Table, counts: UnitCounts, by: dict[str, Any] | None = None) -> bool:
        """Commit a unit's results once; in a retry run, merge them into its committed ones."""
        if self.retry:
            self._merge_retried(unit_id, table, counts)
            return True
        return self.store.commit(unit_id, table, {**counts.to_json(), **(by or {})})

    def _merge_retried(self, unit_id: str, retried: pa.Table, counts: UnitCounts) -> None:
        """Put the retried rows in place of their error records in the unit's results; every
        other row stays as it was. The footer's counts are those of the merged rows, and its
        tokens and engine seconds add this retry's to what the unit cost before. The replace is
        conditional (pipelines/store/output.py): a merge that lost a race merges again."""
        id_col = self.spec.input.id_column

        def merge(old: pa.Table) -> tuple[pa.Table, dict]:
            before = UnitCounts.from_json(json.loads((old.schema.metadata or {})[STATS_KEY]))
            kept = old.filter(pc.invert(pc.is_in(old.column(id_col), value_set=retried.column(id_col))))
            kept = conform(kept.replace_schema_metadata(None), retried.schema)  # written before a column was added
            merged = pa.concat_tables([kept, retried.cast(kept.schema)])
            cols = {c: merged.column(c).to_pylist() for c in RESULT_SCHEMA.names}
            footer = UnitCounts.of_results(cols, before.engine_seconds + counts.engine_seconds)
            footer.prompt_tokens = before.prompt_tokens + counts.prompt_tokens
            footer.completion_tokens = before.completion_tokens + counts.completion_tokens
            return merged, footer.to_json()

        self.store.replace(unit_id, merge)

    def request_keys(self, prompts: list[str | None], max_tokens: list[int | None],
                     samplings: list[dict[str, Any] | None] | None = None) -> list[str | None]:
        """Keys that name identical requests (pipelines/cache/response_cache.py), or all None when
        neither dedup nor a cache is on. Every sampling field that can change an answer is in
        the key, a row's own included."""
        spec = self.spec
        if not spec.cache.dedup and not self.cache:
            return [None] * len(prompts)
        base = spec.sampling.model_dump(mode="json")
        keys = []
        for i, (p, m) in enumerate(zip(prompts, max_tokens)):
            sampling = (samplings[i] if samplings else None) or base
            keys.append(None if p is None else request_key(
                self.model_key, p, spec.input.system_prompt, spec.input.format,
                sampling_identity({**sampling, "max_tokens": m or sampling["max_tokens"]})))
        return keys

    def _share(self, keys: list[str | None], cols: dict[str, list]) -> None:
        """Share what the engine generated (never errors, never answers it got from elsewhere)."""
        if not self.cache or not self.spec.cache.write:
            return
        rows = [i for i, k in enumerate(keys) if k is not None and cols["served_from"][i] == ENGINE]
        try:
            self.cache.add([keys[i] for i in rows], {c: [cols[c][i] for i in rows] for c in ANSWER_COLUMNS})
        except Exception as err:  # the unit is committed; a cache that cannot be written only costs later runs
            log.warning("could not add to the response cache: %r", err)

    def _end(self, unit_id: str, attempt: str, outcome: dict[str, Any]) -> None:
        """The attempt's end record. Failing to write it changes no result: the attempt then
        reads as lost, and is counted as such, which errs on the side of retrying."""
        try:
            self.records.end_attempt(unit_id, attempt, outcome)
        except Exception as err:
            log.warning("could not record the end of unit %s's attempt: %r", unit_id, err)
