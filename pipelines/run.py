"""Put a run together: check and plan, stream the pending units, summarise.

Everything that can be found wrong without an engine is found while planning
(pipelines/planning/plan_run.py), before the cluster is asked for any GPU: the spec, the input
files and columns, duplicate ids, the output folder. The units then stream, one model at a time,
through Ray Data (pipelines/stream/) or this driver's warm engines (pipelines/engine/warm_feed.py),
under the run's own record, its progress and its stops; what they did is summed up and priced.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import replace

import pyarrow as pa

from cluster import storage_requests
from cluster.console import Console
from cluster.session import ray_session
from pipelines.engine import facts as engine_facts
from pipelines.engine.failure import engine_start_failure
from pipelines.engine.warm_pool import keep_warm_seconds
from pipelines.log import console
from pipelines.planning.plan_run import plan_run, prepare
from pipelines.planning.units import Plan, Unit
from pipelines.progress import RunMonitor, RunTotals
from pipelines.redact import redact_url
from pipelines.run_context import Invocation, RunContext
from pipelines.run_summary import RunSummary
from pipelines.spec import PipelineSpec
from pipelines.stops.control import RunControl
from pipelines.stops.deadline import deadline_at
from pipelines.stops.stopping import DEADLINE, StopWatch
from pipelines.store.ledger import compute_ledger, write_ledger
from pipelines.store.output import OutputStore
from pipelines.store.records import Records, new_id
from pipelines.store.startup import startup
from pipelines.stream.model_feed import model_rows
from pipelines.stream.other_runs import OtherRunsWait, await_other_runs
from pipelines.unit.protocol import Skip, outcome_from_row, stall_seconds

__all__ = ["RunSummary", "prepare", "release_engines", "run", "run_units"]

log = logging.getLogger("spotbatch.run")


def release_engines() -> int:
    """Let this driver's warm engines go now, instead of after compute.keep_warm_seconds idle;
    returns how many engine actors were released."""
    from pipelines.engine.warm_pool import POOL

    return POOL.release()


def run(spec: PipelineSpec, address: str | None = None, new_run: bool = False,
        interactive: bool | None = None, verbose: bool | None = None, control: RunControl | None = None) -> RunSummary:
    """Run (or resume) a spec; returns what this invocation did and what the output cost.
    Ray's and vLLM's logs go to a file unless `verbose` (cluster/console.py). `control` is how a
    caller in this process stops it early and reads its progress (pipelines/stops/control.py)."""
    console()  # a run from Python shows its lines when nobody configured logging (pipelines/log.py)
    started = time.monotonic()
    storage_requests.count_s3_requests()  # the run's record holds the driver's S3 requests
    requests_before = storage_requests.snapshot()  # planning's requests are the run's too
    spec, store, plan = plan_run(spec, new_run)
    committed = store.committed_units()
    pending = [u for u in plan.units if u.unit_id not in committed]
    # Start at a random place, so two runs on one output begin on different units (commits
    # stay exactly-once either way; pipelines/unit/protocol.py says how they keep apart).
    start = random.SystemRandom().randrange(len(pending)) if pending else 0  # libraries seed `random`
    how = Invocation(address, interactive, verbose, control, started=started, requests_before=requests_before)
    return run_units(spec, store, plan, pending[start:] + pending[:start], how)


def run_units(spec: PipelineSpec, store: OutputStore, plan: Plan, pending: list[Unit],
              how: Invocation | None = None) -> RunSummary:
    """Run the pending units of a planned output, and price the whole output.

    The one way units are run: `run` passes the units not yet committed, `--retry-failed`
    (pipelines/retry.py) the units with failed rows, and with `how.only_ids` (unit -> ids) only
    those rows of each unit are run and merged back. What the output already cost counts
    against the budget. Finished means every unit is committed, or, with `only_ids`, every
    retried unit was merged."""
    how = how or Invocation()
    started = time.monotonic() if how.started is None else how.started
    storage_requests.count_s3_requests()  # (again: idempotent) --retry-failed comes in here
    requests_before = storage_requests.snapshot() if how.requests_before is None else how.requests_before
    how = replace(how, started=started, requests_before=requests_before)
    summary = RunSummary(output=redact_url(spec.output.path), units_total=len(plan.units))
    ctx = RunContext(spec, plan, store, pending, how, summary, Records(store), new_id())
    close_record = _nothing_to_close  # until the run's record exists
    if pending:
        summary.stopped, close_record = stream_within_budget(ctx)
    return summarise(ctx, close_record)


def _nothing_to_close() -> None:
    return None


def reference_price(spec: PipelineSpec) -> dict | None:
    """cost.reference, as the run record and the ledger keep it."""
    return spec.cost.reference.model_dump() if spec.cost.reference else None


def stream_within_budget(ctx: RunContext) -> tuple[str | None, Callable[[], None]]:
    """Stream the pending units unless what the output cost already spent the budget; returns
    why the run stopped early, if it did, and a call that closes the run's record. An engine
    that could not start is raised as spotbatch's EngineFailed (pipelines/engine/failure.py)."""
    budget = ctx.spec.cost.max_cost_usd
    # what earlier invocations spent counts against a budget; without one, skip reading it
    usd_before = compute_ledger(ctx.store).summary.total_usd if budget is not None else 0.0
    if budget is not None and usd_before >= budget:
        return "budget", _nothing_to_close
    try:
        return stream_under_record(ctx, usd_before)
    except Exception as err:
        failure = engine_start_failure(err)
        if failure is None:
            raise
        raise failure from err


def summarise(ctx: RunContext, close_record: Callable[[], None]) -> RunSummary:
    """The summary finished: whether the run is done, its time, and the whole output's price."""
    summary, store = ctx.summary, ctx.store
    if ctx.only_ids is None:
        summary.finished = store.committed_units() >= {u.unit_id for u in ctx.plan.units}
    else:
        summary.finished = summary.units_run == len(ctx.pending)
    summary.wall_seconds = time.monotonic() - ctx.invocation.started
    ledger = compute_ledger(store, reference_price(ctx.spec))
    if ctx.pending:
        write_ledger(store, ledger)  # rewritten when anything ran
        if summary.units_run:  # this run reached a first result (the latest run with one)
            summary.startup = startup(Records(store))
    close_record()  # its engines' figures kept, its S3 requests up to here (the ledger's too) recorded
    summary.cost = ledger.summary
    return summary


def stream_under_record(ctx: RunContext, usd_before: float) -> tuple[str | None, Callable[[], None]]:
    """Stream the pending units into the summary, under the run's own record, progress and
    stops; returns why the run stopped early, if it did, and a call that writes the run record
    once more, with the driver's S3 requests until then."""
    open_run_record(ctx)
    watch, monitor = watch_run(ctx, usd_before)
    ctx = replace(ctx, monitor=monitor)
    control = ctx.invocation.control
    try:
        with Console(ctx.run_id, ctx.invocation.verbose) as console, watch.watching():
            if control is not None:
                control.attach(watch, monitor)
            if monitor.past_deadline():
                watch.stop(DEADLINE)  # before any engine starts
            if watch.reason is None:  # a stop asked already (a cancel, a deadline): no engine is started
                stream_in_ray_session(ctx, console)
    finally:
        if control is not None:
            control.detach()
        monitor.close()
        ctx.run_record.ended_at, ctx.run_record.stopped = time.time(), monitor.stopped
        write_run_record(ctx)  # the driver's S3 requests, planning on (its actors' are their own)
    return monitor.stopped, lambda: close_run_record(ctx)


def open_run_record(ctx: RunContext) -> None:
    """The run's record, written as the run begins (its deadline in it, as a Unix time)."""
    spec, how = ctx.spec, ctx.invocation
    record = ctx.run_record
    record.invoked_at, record.started_at = time.time() - (time.monotonic() - how.started), time.time()
    record.pid, record.host, record.units_pending = os.getpid(), socket.gethostname(), len(ctx.pending)
    record.ended_at, record.stopped = None, None
    record.max_cost_usd, record.reference = spec.cost.max_cost_usd, reference_price(spec)
    record.deadline = deadline_at(spec.compute.deadline, record.started_at) if spec.compute.deadline else None
    ctx.records.run_record(ctx.run_id, ctx.run_record)


def watch_run(ctx: RunContext, usd_before: float) -> tuple[StopWatch, RunMonitor]:
    """The run's stop watch (a cancel, a budget, a deadline) and its progress, each telling the other."""
    pending_ids = {u.unit_id for u in ctx.pending}
    committed_rows = sum(u.rows for u in ctx.plan.units if u.unit_id not in pending_ids)
    total_rows = ctx.plan.input_rows
    if ctx.only_ids is not None:
        total_rows, committed_rows = sum(len(v) for v in ctx.only_ids.values()), 0
    watch = StopWatch(ctx.records, ctx.run_id, on_stop=lambda reason: monitor.stopping(reason),
                      deadline=lambda: monitor.past_deadline())
    totals = RunTotals(total_rows, committed_rows, len(ctx.pending), usd_before, ctx.spec.cost.max_cost_usd,
                       deadline=ctx.run_record.deadline)
    monitor = RunMonitor(totals, watch.stop, ctx.invocation.interactive, show=ctx.invocation.control is None)
    return watch, monitor


def write_run_record(ctx: RunContext) -> None:
    requests = storage_requests.since(ctx.invocation.requests_before or {})
    ctx.records.run_record(ctx.run_id, replace(ctx.run_record, storage_requests=requests))


def close_run_record(ctx: RunContext) -> None:
    """What the run's engines measured kept, for the next run's compile choice
    (pipelines/engine/facts.py), and the run's record written with its S3 requests so far."""
    try:
        ratio = _output_ratio(ctx.spec, ctx.pending, ctx.summary, ctx.only_ids, ctx.run_id)
        engine_facts.remember_run(ctx.spec, ctx.records.actors(), ctx.run_id, ratio=ratio)
    except Exception as err:  # a home that cannot be written, say: the next choice uses the defaults
        log.warning("could not keep what the engines measured: %r", err)
    write_run_record(ctx)


def _output_ratio(spec: PipelineSpec, pending: list[Unit], summary: RunSummary,
                  only_ids: dict[str, pa.Array] | None, run_id: str) -> dict | None:
    """The share of their max_tokens this run's rows used, kept for the estimate: only from a
    run that committed every unit it set out to (of one model, not a retry), whose units know
    their most (Unit.decode_tokens), so the tokens generated and allowed are of the same rows."""
    if only_ids is not None or spec.routed or not pending or summary.units_run != len(pending) \
            or any(u.decode_tokens is None for u in pending):
        return None
    generated = summary.completion_tokens + summary.reused_completion_tokens
    return engine_facts.output_ratio(generated, sum(u.decode_tokens for u in pending), run_id)


def stream_in_ray_session(ctx: RunContext, console: Console) -> None:
    """Stream the pending units in a Ray session; a unit left to a live actor of another run is
    waited for, and if that actor dies (or hangs) meanwhile, the unit is ours again and goes
    round once more (up to compute.max_attempts rounds)."""
    spec = ctx.spec
    with ray_session(ctx.invocation.address, console=console, keep=keep_warm_seconds(spec) > 0):
        ctx.run_record.ray_ready_at = time.time()  # where a run's first seconds go: pipelines/store/startup.py
        ctx.records.run_record(ctx.run_id, ctx.run_record)
        todo = ctx.pending
        for _ in range(spec.compute.max_attempts):
            left = stream_model_by_model(ctx, todo)
            if not left or ctx.monitor.stopped:
                break
            wait = OtherRunsWait(stall_seconds(spec), spec.compute.wait_for_other_runs_seconds, stopped=ctx.stopped)
            orphaned, held = await_other_runs(ctx.records, left, ctx.run_id, wait)
            ctx.summary.left_to_others = len(held)
            todo = [u for u in ctx.pending if u.unit_id in orphaned]
            if not todo:
                break


def stream_model_by_model(ctx: RunContext, units: list[Unit]) -> list[str]:
    """Stream units into the summary; returns the units left to another run that holds them.
    One model at a time: its engine actors start with its first unit and are released when its
    last is done, before the next model's start; a model with no rows never does."""
    left: list[str] = []
    for model, its_units in by_model(units):
        if ctx.monitor.stopped:
            break  # asked to stop (budget, deadline, cancel): start no other model
        for row in model_rows(ctx, model, its_units):
            unit = outcome_from_row(row)
            ctx.summary.add_unit(unit)
            if unit.skip is Skip.STOP:  # an actor heard it before the driver did
                ctx.monitor.stopping(unit.reason)
            ctx.monitor.on_unit(row)
            if unit.skip is Skip.HELD:
                left.append(unit.unit_id)
    return left


def by_model(units: list[Unit]) -> list[tuple[str | None, list[Unit]]]:
    """Units grouped by their model (None: the run has one), in order of each one's first unit."""
    groups: dict[str | None, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.model, []).append(u)
    return list(groups.items())
