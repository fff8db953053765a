"""A running batch's request_counts as OpenAI counts them: requests, not rows. A request of
several rows (a list of prompts or of inputs; pipelines/formats/lines.py row_ids) is counted
once all its rows are committed: failed if any of them is an error, as the openai-batch export
decides its line. Only the committed units' id and error columns are read, each unit's once."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipelines.formats.lines import request_of
from pipelines.formats.openai import ENDPOINTS
from pipelines.planning.units import Plan
from pipelines.store.output import OutputStore
from pipelines.store.units import STATS_READS_IN_FLIGHT
from server.state import State

UNITS_READ_AHEAD = 4 * STATS_READS_IN_FLIGHT  # units' columns held at once, whatever the run's size
RUNS_KEPT = 64  # runs whose units' tallies are kept, the most recently polled


@dataclass(frozen=True)
class Tally:
    """What one committed unit adds to its batch's counts: requests it holds whole, and the rows
    it holds of requests split over several units."""

    completed: int = 0
    failed: int = 0
    partial: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # custom_id: rows, errors, of rows


class Tallies:
    """Each committed unit's tally, read once: a unit's results never change once committed (a
    served run never retries failed rows into them), so a poll reads only the units committed
    since the last one, not every unit of the run again."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, dict[str, Tally]] = OrderedDict()
        self._lock = threading.Lock()

    def of_run(self, url: str) -> dict[str, Tally]:
        with self._lock:
            run = self._runs.pop(url, None) or {}
            self._runs[url] = run
            while len(self._runs) > RUNS_KEPT:
                self._runs.popitem(last=False)
            return run


TALLIES = Tallies()


def request_counts(state: State, tenant: str, batch: dict[str, Any]) -> dict[str, int] | None:
    """{total, completed, failed} of the batch's requests answered so far; None before its run is
    planned. Memory holds each unit's tally (two numbers, and the requests split between units)."""
    url = state.run_url(tenant, batch["id"])
    store = OutputStore(url, state.storage_options)
    manifest = store.read_manifest()
    if manifest is None:
        return None
    plan = Plan.from_json(manifest)
    several = batch["endpoint"] in ENDPOINTS and ENDPOINTS[batch["endpoint"]].LIST_INPUTS  # Anthropic's: a row each
    committed = store.committed_units()
    units = [u.unit_id for u in plan.units if u.unit_id in committed]
    known = TALLIES.of_run(f"{url}#{manifest.get('fingerprint')}")
    new = [u for u in units if u not in known]
    with ThreadPoolExecutor(STATS_READS_IN_FLIGHT) as pool:
        for at in range(0, len(new), UNITS_READ_AHEAD):
            read = pool.map(lambda u: store.read_unit(u, [plan.id_column, "error"]), new[at:at + UNITS_READ_AHEAD])
            for unit_id, table in zip(new[at:at + UNITS_READ_AHEAD], read):
                known[unit_id] = tally(table.column(0).to_pylist(), table.column(1).to_pylist(), several)
    return {"total": batch["request_counts"]["total"], **summed([known[u] for u in units])}


def tally(row_ids: list, errors: list, several: bool) -> Tally:
    """A unit's tally from its id and error columns."""
    completed = failed = 0
    partial: dict[str, list[int]] = {}
    for row_id, error in zip(row_ids, errors):
        custom_id, _, count = request_of(str(row_id)) if several else (str(row_id), 0, 1)
        if count == 1:
            completed, failed = completed + (error is None), failed + (error is not None)
            continue
        seen = partial.setdefault(custom_id, [0, 0, count])
        seen[0], seen[1] = seen[0] + 1, seen[1] + (error is not None)
        if seen[0] == count:  # the whole request is in this unit: counted here, not kept as split
            del partial[custom_id]
            completed, failed = completed + (not seen[1]), failed + bool(seen[1])
    return Tally(completed, failed, {k: tuple(v) for k, v in partial.items()})


def summed(tallies: list[Tally]) -> dict[str, int]:
    """{completed, failed}: a request split over units counts once all its rows are committed,
    failed if any of them is an error, as the openai-batch export decides its line."""
    counts = {"completed": sum(t.completed for t in tallies), "failed": sum(t.failed for t in tallies)}
    split: dict[str, list[int]] = {}
    for t in tallies:
        for custom_id, (rows, errors, count) in t.partial.items():
            seen = split.setdefault(custom_id, [0, 0, count])
            seen[0], seen[1] = seen[0] + rows, seen[1] + errors
    for rows, errors, count in split.values():
        if rows == count:
            counts["failed" if errors else "completed"] += 1
    return counts


FIGURES_SECONDS = 2.0  # a running batch's usage and cost are read at most this often, however many poll


class RecentFigures:
    """run_figures (the run's status and ledger: every unit's footer and every record) of a
    running batch, kept FIGURES_SECONDS from when the read ended: clients polling in a loop cost
    the store a read every few seconds, not one per poll. One read of a run at a time: polls that
    come while it reads get the last figures; a slower read never replaces a newer one."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._reading: set[str] = set()
        self._lock = threading.Lock()

    def get(self, state: State, tenant: str, batch_id: str) -> Any:
        from server.finish import run_figures

        key = state.run_url(tenant, batch_id)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and (time.monotonic() - seen[0] < FIGURES_SECONDS or key in self._reading):
                return seen[1]
            self._reading.add(key)
        try:
            figures = run_figures(state, tenant, batch_id)
        finally:
            with self._lock:
                self._reading.discard(key)
        if figures is None:  # not planned yet: asked again at the next poll
            return None
        with self._lock:
            now = time.monotonic()
            if key not in self._seen or self._seen[key][0] <= now:
                self._seen[key] = (now, figures)
            self._seen.move_to_end(key)
            while len(self._seen) > RUNS_KEPT:
                self._seen.popitem(last=False)
        return figures


FIGURES = RecentFigures()
