"""A running batch's request_counts as OpenAI counts them: requests, not rows. A request of
several rows (a list of prompts or of inputs; pipelines/formats/lines.py row_ids) is counted
once all its rows are committed: failed if any of them is an error, as the openai-batch export
decides its line. Only the committed units' id and error columns are read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipelines.formats.lines import request_of
from pipelines.formats.openai import ENDPOINTS
from pipelines.planning.units import Plan
from pipelines.store.output import OutputStore
from pipelines.store.units import STATS_READS_IN_FLIGHT
from server.state import State

UNITS_READ_AHEAD = 4 * STATS_READS_IN_FLIGHT  # units' columns held at once, whatever the run's size


def request_counts(state: State, tenant: str, batch: dict[str, Any]) -> dict[str, int] | None:
    """{total, completed, failed} of the batch's requests answered so far; None before its run is
    planned. Memory holds the requests whose rows are partly committed, not every request."""
    store = OutputStore(state.run_url(tenant, batch["id"]), state.storage_options)
    manifest = store.read_manifest()
    if manifest is None:
        return None
    plan = Plan.from_json(manifest)
    several = batch["endpoint"] in ENDPOINTS and ENDPOINTS[batch["endpoint"]].LIST_INPUTS  # Anthropic's: a row each
    committed = store.committed_units()
    units = [u.unit_id for u in plan.units if u.unit_id in committed]
    counts = {"total": batch["request_counts"]["total"], "completed": 0, "failed": 0}
    partial: dict[str, list[int]] = {}  # custom_id: [its rows seen, of them errors]
    with ThreadPoolExecutor(STATS_READS_IN_FLIGHT) as pool:
        for at in range(0, len(units), UNITS_READ_AHEAD):
            read = pool.map(lambda u: store.read_unit(u, [plan.id_column, "error"]), units[at:at + UNITS_READ_AHEAD])
            for table in read:
                for row_id, error in zip(table.column(0).to_pylist(), table.column(1).to_pylist()):
                    custom_id, _, count = request_of(str(row_id)) if several else (str(row_id), 0, 1)
                    seen = partial.setdefault(custom_id, [0, 0]) if count > 1 else [0, 0]
                    seen[0], seen[1] = seen[0] + 1, seen[1] + (error is not None)
                    if seen[0] == count:
                        partial.pop(custom_id, None)
                        counts["failed" if seen[1] else "completed"] += 1
    return counts
