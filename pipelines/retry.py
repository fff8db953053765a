"""`spotbatch run --retry-failed OUTPUT`: run only the rows that ended as error records again,
and merge their new results into their units.

The spec is the one the output was made with (its manifest keeps it), so nothing has to be
restated; inputs must still match it. Each unit with failed rows is run again for just those
rows, and its results file is replaced by the merge (the old file is kept under
_spotbatch/replaced/). Rows that fail again stay error records, with the new reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.log import console
from pipelines.planning.units import Plan
from pipelines.redact import credentials_hint, describe, output_options, recorded_spec
from pipelines.run import RunSummary, prepare, run_units
from pipelines.run_context import Invocation
from pipelines.store.output import OutputError, OutputStore

log = logging.getLogger("spotbatch.run")


def failed_rows(store: OutputStore, plan: Plan, classes: list[str] | None = None) -> dict[str, pa.Array]:
    """unit -> ids of its error records (of the given classes, or all), in the ids' own type."""
    found: dict[str, pa.Array] = {}
    committed = store.committed_units()
    done = [u for u in plan.units if u.unit_id in committed]
    stats = store.unit_stats_many([u.unit_id for u in done])  # footers read several at a time, as status does
    for unit in (u for u, s in zip(done, stats) if s.get("errors")):
        table = store.read_unit(unit.unit_id).select([plan.id_column, "error", "error_class"])
        failed = pc.is_valid(table.column("error"))
        if classes:
            failed = pc.and_(failed, pc.is_in(table.column("error_class"), value_set=pc.cast(classes, "string")))
        ids = table.filter(failed).column(plan.id_column).combine_chunks()
        if len(ids):
            found[unit.unit_id] = ids
    return found


def retry_failed(output: str, storage_options: dict | None = None, classes: list[str] | None = None,
                 overrides: list[str] | None = None, how: Invocation | None = None) -> RunSummary:
    """`overrides` (dotted.key=value) may change how it runs (compute, cost: a longer timeout,
    more actors, a budget); a change to what decides the answers is refused, as for any run.
    What the output has cost so far counts against a budget, as in any run. `how` says where
    and how it runs (its address, verbose, interactive: pipelines/run_context.py)."""
    console()
    how = replace(how or Invocation(), started=time.monotonic())
    overrides = overrides or []
    storage_options = storage_options or output_options(overrides)
    store = OutputStore(output, storage_options)
    manifest = store.require_manifest()
    store.check_conditional_replace()  # before any engine starts, not at the first merge
    spec = recorded_spec(manifest["spec"], overrides)
    if storage_options:
        spec.output.storage_options = storage_options
    log.info("running the output's own spec again: %s", describe(spec))
    with credentials_hint(manifest["spec"]):
        store, plan = prepare(spec)  # refuses if the inputs changed since
    if store.committed_units() < {u.unit_id for u in plan.units}:
        raise OutputError(f"{output} is not finished: run the spec again to finish it before --retry-failed")
    only_ids = failed_rows(store, plan, classes)
    pending = [u for u in plan.units if u.unit_id in only_ids]
    return run_units(spec, store, plan, pending, replace(how, only_ids=only_ids))
