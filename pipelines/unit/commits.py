"""A unit's commit: its results (or its error records) written once, only while the output
still holds its run, and in a `--retry-failed` run merged into the unit's committed rows."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from operators.embed import embed_schema, empty_embeddings
from operators.engine_config import ADAPTER
from operators.failures import BAD_INPUT
from operators.generate import RESULT_SCHEMA, conform, empty_results
from pipelines.redact import redact_url
from pipelines.store.counts import UnitCounts
from pipelines.store.output import STATS_KEY, OutputStore
from pipelines.store.record_types import AttemptOutcome
from pipelines.store.records import COMMITTED_AT
from pipelines.stream.unit_rows import ERROR, ID, SAMPLING
from pipelines.unit.context import UnitContext
from pipelines.unit.outcome import Skip, UnitOutcome

log = logging.getLogger("spotbatch.unit")

GAVE_UP_BY = "gave_up_by"  # in the footer of a unit given up on: the actor that gave up


def result_schema(context: UnitContext) -> pa.Schema:
    """The result columns of the run's task: generation's, or embed's with its vectors' size."""
    return embed_schema(context.embedding_size) if context.spec.task == "embed" else RESULT_SCHEMA


def no_results(context: UnitContext, errors: list[str | None]) -> dict[str, list]:
    """The task's result columns for rows that get none (each with its error, if any)."""
    return empty_embeddings(errors) if context.spec.task == "embed" else empty_results(errors)


def result_table(context: UnitContext, ids: pa.Array | pa.ChunkedArray, cols: dict[str, list],
                 adapters: list[str | None] | None = None) -> pa.Table:
    """A unit's results in the output schema; the input id keeps its own name and type. A run
    with LoRA adapters names each row's (`adapter`, null for the base model) after `model`."""
    n, spec = len(ids), context.spec
    return pa.table({
        spec.input.id_column: ids,
        **{f.name: pa.array(cols[f.name], f.type) for f in result_schema(context)},
        "model": pa.array([redact_url(spec.model.name)] * n, pa.string()),  # its name as written down
        **({"adapter": pa.array(adapters or [None] * n, pa.string())} if spec.model.adapters else {}),
        "spec_fingerprint": pa.array([context.fingerprint] * n, pa.string()),
    })


def row_adapters(rows: pa.Table) -> list[str | None]:
    """Each row's LoRA adapter, as the read stage put it in the row's sampling (None: the base)."""
    if SAMPLING not in rows.column_names:
        return [None] * rows.num_rows
    return [json.loads(s).get(ADAPTER) if s else None for s in rows.column(SAMPLING).to_pylist()]


class UnitCommits:
    """Commits one actor's units into the output of its run."""

    def __init__(self, context: UnitContext, store: OutputStore):
        self.context = context
        self.store = store

    def if_current(self, unit_id: str, table: pa.Table, counts: UnitCounts,
                   by: dict[str, Any] | None = None) -> AttemptOutcome:
        """Commit (or merge) only while the output still holds this run: a run moved aside by
        --new-run must never add to the next one, results or error records. Checked before the
        commit, and after it (the move may have come in between), when a late file is taken
        back out again. Returns COMMITTED, ALREADY_COMMITTED or SUPERSEDED."""
        fingerprint = self.context.fingerprint
        if self.store.fingerprint() != fingerprint:
            return AttemptOutcome.SUPERSEDED
        if not self._commit(unit_id, table, counts, by):
            return AttemptOutcome.ALREADY_COMMITTED
        if self.store.fingerprint() != fingerprint:
            moved = self.store.retract(unit_id, fingerprint)
            log.warning("unit %s was committed after its run was moved aside; moved to %s", unit_id, moved)
            return AttemptOutcome.SUPERSEDED
        return AttemptOutcome.COMMITTED

    def failed(self, unit_id: str, rows: pa.Table, error_class: str, message: str) -> UnitOutcome:
        """Give up on a unit: every row becomes an error record (a row that already had one keeps
        it), so the run ends and `spotbatch run --retry-failed` can try again later."""
        prior = rows.column(ERROR).to_pylist()
        cols = no_results(self.context, [p or message for p in prior])
        cols["error_class"] = [BAD_INPUT if p else error_class for p in prior]
        counts = UnitCounts.of_results(cols, 0.0)
        table = result_table(self.context, rows.column(ID), cols, row_adapters(rows))
        # Who gave up, and when: two actors giving up on one unit would otherwise write the same
        # bytes, and a store that tells its own lost write by its bytes (S3) would take both as ours.
        by = {GAVE_UP_BY: self.context.actor_id, COMMITTED_AT: time.time()}
        outcome = self.if_current(unit_id, table, counts, by)
        if outcome is AttemptOutcome.SUPERSEDED:
            return UnitOutcome.skipped_as(unit_id, Skip.SUPERSEDED)
        return UnitOutcome(**counts.to_json(), unit_id=unit_id, committed=outcome is AttemptOutcome.COMMITTED)

    def _commit(self, unit_id: str, table: pa.Table, counts: UnitCounts, by: dict[str, Any] | None = None) -> bool:
        """Commit a unit's results once; in a retry run, merge them into its committed ones."""
        if self.context.retry:
            self._merge_retried(unit_id, table, counts)
            return True
        return self.store.commit(unit_id, table, {**counts.to_json(), **(by or {})})

    def _merge_retried(self, unit_id: str, retried: pa.Table, counts: UnitCounts) -> None:
        """Put the retried rows in place of their error records in the unit's results; every
        other row stays as it was. The footer's counts are those of the merged rows, and its
        tokens and engine seconds add this retry's to what the unit cost before. The replace is
        conditional (pipelines/store/output.py): a merge that lost a race merges again."""
        id_col = self.context.spec.input.id_column

        def merge(old: pa.Table) -> tuple[pa.Table, dict]:
            before = UnitCounts.from_json(json.loads((old.schema.metadata or {})[STATS_KEY]))
            kept = old.filter(pc.invert(pc.is_in(old.column(id_col), value_set=retried.column(id_col))))
            kept = conform(kept.replace_schema_metadata(None), retried.schema)  # written before a column was added
            merged = pa.concat_tables([kept, retried.cast(kept.schema)])
            cols = {c: merged.column(c).to_pylist() for c in result_schema(self.context).names}
            footer = UnitCounts.of_results(cols, before.engine_seconds + counts.engine_seconds)
            footer.prompt_tokens = before.prompt_tokens + counts.prompt_tokens
            footer.completion_tokens = before.completion_tokens + counts.completion_tokens
            footer.reasoning_tokens = before.reasoning_tokens + counts.reasoning_tokens
            footer.cached_prompt_tokens = before.cached_prompt_tokens + counts.cached_prompt_tokens
            return merged, footer.to_json()

        self.store.replace(unit_id, merge)
