"""Put a run together: check, plan, then stream pending units through Ray Data.

Everything that can be found wrong without an engine is found here, before the cluster is
asked for any GPU: the spec, the input files and columns, duplicate ids, the output folder.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pyarrow as pa

from cluster import storage_requests
from cluster.console import Console
from cluster.models import ModelSource, describe_change, identify
from cluster.resources import ActorResources
from cluster.session import ray_session
from operators.cost import CostSummary
from pipelines.engine import compile_choice
from pipelines.engine import facts as engine_facts
from pipelines.engine.actor import MODEL, EngineActor
from pipelines.engine.decode_work import tokens_ahead
from pipelines.engine.failure import engine_start_failure
from pipelines.log import console
from pipelines.planning.inputs import check_unique_ids, list_shards
from pipelines.planning.overlap import check_apart
from pipelines.planning.start_over import start_over
from pipelines.planning.units import (
    SINGLE_MODEL,
    Plan,
    Unit,
    fingerprint,
    fingerprint_parts,
    make_plan,
    units_in_flight,
)
from pipelines.progress import RunMonitor, ipython_shell
from pipelines.redact import redact_spec, redact_url
from pipelines.spec import PipelineSpec, SpecError
from pipelines.stops.control import RunControl
from pipelines.stops.deadline import deadline_at
from pipelines.stops.drain import CHECK_SECONDS, StopDrain
from pipelines.stops.stopping import DEADLINE, StopWatch
from pipelines.store.counts import UnitCounts, counts_of
from pipelines.store.ledger import compute_ledger, write_ledger
from pipelines.store.output import OutputError, OutputStore
from pipelines.store.record_types import RunRecord
from pipelines.store.records import STALL_SECONDS, Records, beat_seconds, new_id
from pipelines.store.startup import startup
from pipelines.stream.unit_blocks import block_sizes, group
from pipelines.stream.unit_rows import UNITS, pack_ids, read_units
from pipelines.unit_protocol import Skip, UnitOutcome, outcome_from_row, stall_seconds

log = logging.getLogger("spotbatch.run")

DEFAULT_KEEP_WARM_SECONDS = 300.0  # compute.keep_warm_seconds in an interactive Python
LEAVE_STREAM_SECONDS = 30.0  # at most, for Ray Data's thread to hand over the block it fetches


@dataclass
class RunSummary(UnitCounts):
    """What one invocation did (the counts of the units it committed), and what the whole
    output cost so far."""

    output: str = ""
    units_total: int = 0
    units_run: int = 0  # units this invocation committed
    units_skipped: int = 0  # units another run (or a stale attempt) committed first
    skipped_why: dict[str, int] = field(default_factory=dict)  # why units were not committed here, by reason
    units_unfinished: int = 0  # units left pending: the storage kept failing them, or their input changed
    left_to_others: int = 0  # units another run still held when this one stopped waiting
    last_fault: str | None = None  # why, the last time
    wall_seconds: float = 0.0
    finished: bool = False
    stopped: str | None = None  # why the run ended early: budget, deadline, cancelled (pipelines/stops/stopping.py)
    cost: CostSummary | None = None  # of the whole output, every invocation so far
    startup: dict | None = None  # where this run's first seconds went (pipelines/store/startup.py)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.wall_seconds if self.wall_seconds else 0.0

    def add_unit(self, unit: UnitOutcome) -> None:
        if unit.committed:
            self.units_run += 1
            self.add(counts_of(unit))
        else:  # engine time spent on a unit another attempt committed first still counts
            self.units_skipped += 1
            why = unit.skip.value if unit.skip else "not committed"
            self.skipped_why[why] = self.skipped_why.get(why, 0) + 1
            self.engine_seconds += unit.engine_seconds
            if unit.skip in (Skip.STORAGE_ERROR, Skip.INPUT_CHANGED):
                self.units_unfinished += 1
                self.last_fault = unit.skipped


def actor_resources(spec: PipelineSpec, units_held: int = 2) -> ActorResources:
    c = spec.compute
    low = c.min_actors if c.min_actors is not None else c.actors or 1
    high = c.max_actors if c.max_actors is not None else c.actors or 1
    return ActorResources(
        cpus=c.cpus_per_actor,
        gpus=c.gpus_per_actor,
        accelerator_type=c.accelerator_type,
        spot_resource=c.spot_resource,
        resources=c.resources,
        min_actors=low,
        max_actors=high,
        units_in_flight=c.units_in_flight or units_held,
    )


def prepare(spec: PipelineSpec, new_run: bool = False,
            sources: dict[str, dict] | None = None) -> tuple[OutputStore, Plan]:
    """Validate input and output, and load or create the run's plan. No engine is touched.

    An output that holds a run of a different spec (or of other weights under the same model
    name) is refused, naming what changed. With `new_run` the run the output holds, changed or
    not, is moved aside (never deleted, never while its actors work: pipelines/planning/start_over.py)
    and a new run begins."""
    sources = identify_models(spec) if sources is None else sources
    store = OutputStore(spec.output.path, spec.output.storage_options)
    store.check_is_ours()
    shards = list_shards(spec.input)
    parts = fingerprint_parts(spec, shards, sources)
    if store.finish_supersede():  # a --new-run that was interrupted: its move is finished first
        log.info("finished moving an earlier run's results aside (an interrupted --new-run)")
    manifest = store.read_manifest()
    if manifest is None or new_run:
        check_unique_ids(spec.input, shards)  # before a new plan is written, or an old run moved aside
    if new_run:
        moved = start_over(store)
        if moved is not None:
            log.info("the earlier run's results were moved to %s", moved)
        manifest = None
    probed = manifest is None
    if manifest is None:
        plan = make_plan(spec, shards, sources)
        store.check_exclusive_create()  # exactly-once rests on it: checked before the first write that counts
        # The spec as it is written down keeps no secret (pipelines/redact.py).
        manifest = store.create_manifest({**plan.to_json(), "spec": redact_spec(spec.model_dump(mode="json"))})
    if manifest["fingerprint"] != fingerprint(parts):
        changed = [k for k, v in parts.items() if manifest["parts"].get(k) != v]
        weights = [describe_change(old, ModelSource.from_json(sources[name]))
                   for name, old in manifest.get("models", {}).items()
                   if name in sources and old.get("pin") != sources[name]["pin"]]
        raise OutputError(
            f"output path {store.url} holds another run's results; what differs from it: "
            f"{', '.join(changed)}{''.join(f'. {w}' for w in weights)}. Use a new output path, or --new-run "
            f"to move its results aside and start over."
        )
    if not probed:
        store.check_exclusive_create()
        store.pin_fingerprint(manifest["fingerprint"])
    plan = Plan.from_json(manifest)
    plan.models = sources  # the same pins (the fingerprint says so), found afresh
    return store, plan


def identify_models(spec: PipelineSpec) -> dict[str, dict]:
    """Every model the spec names, found and pinned (cluster/models): a typo, a repo not in an
    offline cache or a URL with no model stops the run here, before anything is written."""
    named = spec.models.items() if spec.routed else [(SINGLE_MODEL, spec.model)]
    for name, model in named:
        check_compile_cache(model, f"models.{name}" if name else "model")
    return {name: identify(model, redact_url(model.name)).to_json() for name, model in named}


def check_compile_cache(model, field: str) -> None:
    """A shared compile cache an engine may use must be readable now, not found unreadable on
    every node after the run has started (where it would only be reported)."""
    from pipelines.engine.compile_cache import SharedCompileCache
    from pipelines.redact import redact_message

    cache = model.compile_cache
    if cache is None or model.enforce_eager is True:  # eager engines never compile
        return
    try:
        SharedCompileCache(cache.path, cache.storage_options).check()
    except Exception as err:
        raise SpecError(f"{field}.compile_cache.path: cannot list {redact_url(cache.path)}: "
                        f"{err.__class__.__name__}: {redact_message(str(err), cache.storage_options)[:300]}") from None


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
    from pipelines.formats.batch_files import resolve_input

    console()  # a run from Python shows its lines when nobody configured logging (pipelines/log.py)
    started = time.monotonic()
    storage_requests.count_s3_requests()  # the run's record holds the driver's S3 requests
    requests_before = storage_requests.snapshot()  # planning's requests are the run's too
    check_apart(spec)  # an output or a cache inside the input (or the reverse), refused by name
    sources = identify_models(spec)
    spec = resolve_input(spec, new_run)
    store, plan = prepare(spec, new_run=new_run, sources=sources)
    committed = store.committed_units()
    pending = [u for u in plan.units if u.unit_id not in committed]
    # Start at a random place, so two runs on one output begin on different units (commits
    # stay exactly-once either way; pipelines/unit_protocol.py says how they keep apart).
    start = random.SystemRandom().randrange(len(pending)) if pending else 0  # libraries seed `random`
    return run_units(spec, store, plan, pending[start:] + pending[:start], address=address,
                     interactive=interactive, started=started, verbose=verbose, requests_before=requests_before,
                     control=control)


def run_units(spec: PipelineSpec, store: OutputStore, plan: Plan, pending: list[Unit], *,
              address: str | None = None, interactive: bool | None = None,
              only_ids: dict[str, pa.Array] | None = None, started: float | None = None,
              verbose: bool | None = None, requests_before: dict[str, int] | None = None,
              control: RunControl | None = None) -> RunSummary:
    """Run the pending units of a planned output, and price the whole output.

    The one way units are run: `run` passes the units not yet committed, `--retry-failed`
    (pipelines/retry.py) the units with failed rows, and with `only_ids` (unit -> ids) only
    those rows of each unit are run and merged back. What the output already cost counts
    against the budget. Finished means every unit is committed, or, with `only_ids`, every
    retried unit was merged."""
    started = time.monotonic() if started is None else started
    storage_requests.count_s3_requests()  # (again: idempotent) --retry-failed comes in here
    requests_before = storage_requests.snapshot() if requests_before is None else requests_before
    def close_record() -> None:  # until the run's record exists
        return None

    reference = spec.cost.reference.model_dump() if spec.cost.reference else None
    summary = RunSummary(output=redact_url(spec.output.path), units_total=len(plan.units))
    if pending:
        budget = spec.cost.max_cost_usd
        # what earlier invocations spent counts against a budget; without one, skip reading it
        usd_before = compute_ledger(store).summary.total_usd if budget is not None else 0.0
        if budget is not None and usd_before >= budget:
            summary.stopped = "budget"
        else:
            try:
                summary.stopped, close_record = _stream_pending(
                    spec, plan, pending, store, summary, address=address, usd_before=usd_before,
                    reference=reference, interactive=interactive, only_ids=only_ids, verbose=verbose,
                    invoked_at=time.time() - (time.monotonic() - started), requests_before=requests_before,
                    control=control)
            except Exception as err:
                failure = engine_start_failure(err)
                if failure is None:
                    raise
                raise failure from err
    if only_ids is None:
        summary.finished = store.committed_units() >= {u.unit_id for u in plan.units}
    else:
        summary.finished = summary.units_run == len(pending)
    summary.wall_seconds = time.monotonic() - started
    ledger = compute_ledger(store, reference)
    if pending:
        write_ledger(store, ledger)  # rewritten when anything ran
        if summary.units_run:  # this run reached a first result (the latest run with one)
            summary.startup = startup(Records(store))
    close_record()  # its engines' figures kept, its S3 requests up to here (the ledger's too) recorded
    summary.cost = ledger.summary
    return summary


def _stream_pending(spec: PipelineSpec, plan: Plan, pending: list, store: OutputStore, summary: RunSummary, *,
                    address: str | None, usd_before: float, reference: dict | None,
                    interactive: bool | None, only_ids: dict[str, pa.Array] | None = None,
                    verbose: bool | None = None, invoked_at: float | None = None,
                    requests_before: dict[str, int] | None = None,
                    control: RunControl | None = None) -> tuple[str | None, Callable[[], None]]:
    """Stream the pending units into `summary`; returns why the run stopped early, if it did,
    and a call that writes the run record once more, with the driver's S3 requests until then."""
    records = Records(store)
    run_id = new_id()
    run_record = RunRecord(invoked_at=invoked_at, started_at=time.time(), pid=os.getpid(), host=socket.gethostname(),
                           units_pending=len(pending), ended_at=None, stopped=None,
                           max_cost_usd=spec.cost.max_cost_usd, reference=reference)
    deadline = run_record.deadline = (deadline_at(spec.compute.deadline, run_record.started_at)
                                      if spec.compute.deadline else None)
    records.run_record(run_id, run_record)
    pending_ids = {u.unit_id for u in pending}
    committed_rows = sum(u.rows for u in plan.units if u.unit_id not in pending_ids)
    total_rows = plan.input_rows
    if only_ids is not None:
        total_rows, committed_rows = sum(len(v) for v in only_ids.values()), 0
    watch = StopWatch(records, run_id, on_stop=lambda reason: monitor.stopping(reason),
                      deadline=lambda: monitor.past_deadline())
    monitor = RunMonitor(total_rows, committed_rows, len(pending), usd_before, spec.cost.max_cost_usd,
                         watch.stop, interactive, deadline=deadline, show=control is None)
    try:
        with Console(run_id, verbose) as console, watch.watching():
            if control is not None:
                control.attach(watch, monitor)
            if monitor.past_deadline():
                watch.stop(DEADLINE)  # before any engine starts
            if watch.reason is None:  # a stop asked already (a cancel, a deadline): no engine is started
                _stream_watched(spec, plan, pending, store, summary, records, run_id, run_record, only_ids,
                                monitor, address, console)
    finally:
        if control is not None:
            control.detach()
        monitor.close()
        run_record.ended_at, run_record.stopped = time.time(), monitor.stopped
        # the driver's S3 requests, planning on (its actors' are their own)
        records.run_record(run_id, replace(run_record, storage_requests=storage_requests.since(requests_before or {})))

    def close() -> None:
        try:  # what its engines measured, for the next run's compile choice (pipelines/engine/facts.py)
            ratio = _output_ratio(spec, pending, summary, only_ids, run_id)
            engine_facts.remember_run(spec, records.actors(), run_id, ratio=ratio)
        except Exception as err:  # a home that cannot be written, say: the next choice uses the defaults
            log.warning("could not keep what the engines measured: %r", err)
        records.run_record(run_id, replace(run_record, storage_requests=storage_requests.since(requests_before or {})))

    return monitor.stopped, close


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


def _stream_watched(spec: PipelineSpec, plan: Plan, pending: list[Unit], store: OutputStore, summary: RunSummary,
                    records: Records, run_id: str, run_record: RunRecord, only_ids: dict[str, pa.Array] | None,
                    monitor: RunMonitor, address: str | None, console: Console) -> None:
    with ray_session(address, console=console, keep=keep_warm_seconds(spec) > 0):
        run_record.ray_ready_at = time.time()  # where a run's first seconds go: pipelines/store/startup.py
        records.run_record(run_id, run_record)
        todo = pending
        # A unit left to a live actor of another run is waited for; if that actor dies (or
        # hangs) meanwhile, the unit is ours again and goes round once more.
        for _ in range(spec.compute.max_attempts):
            left = _stream_models(spec, plan, todo, run_id, only_ids, summary, monitor)
            if not left or monitor.stopped:
                break
            orphaned, held = await_other_runs(records, store, left, run_id, stall_seconds(spec),
                                              spec.compute.wait_for_other_runs_seconds,
                                              stopped=lambda: monitor.stopped is not None)
            summary.left_to_others = len(held)
            todo = [u for u in pending if u.unit_id in orphaned]
            if not todo:
                break


def _stream_models(spec: PipelineSpec, plan: Plan, units: list[Unit], run_id: str,
                   only_ids: dict[str, pa.Array] | None, summary: RunSummary, monitor: RunMonitor) -> list[str]:
    """Stream units into the summary; returns the units left to another run that holds them.
    One model at a time: its engine actors start with its first unit and are released when its
    last is done, before the next model's start; a model with no rows never does."""
    left: list[str] = []
    for model, its_units in by_model(units):
        if monitor.stopped:
            break  # asked to stop (budget, deadline, cancel): start no other model
        for row in _stream(spec, plan, its_units, run_id, only_ids, model,
                           stopped=lambda: monitor.stopped is not None):
            unit = outcome_from_row(row)
            summary.add_unit(unit)
            if unit.skip is Skip.STOP:  # an actor heard it before the driver did
                monitor.stopping(unit.reason)
            monitor.on_unit(row)
            if unit.skip is Skip.HELD:
                left.append(unit.unit_id)
    return left


def await_other_runs(records: Records, store: OutputStore, unit_ids: list[str], run_id: str,
                     stall: float = STALL_SECONDS, max_wait_seconds: float = 3600.0,
                     poll_seconds: float = 1.0, stopped: Callable[[], bool] = lambda: False,
                     ) -> tuple[set[str], set[str]]:
    """Wait, for at most `max_wait_seconds` or until the run is asked to stop, for units this
    run left to live actors of another run. Returns (orphaned, held): units whose holder died
    or hung and are not committed (this run may take them), and units still held when the wait
    ended."""
    deadline = time.monotonic() + max_wait_seconds
    waiting = set(unit_ids)
    while True:
        waiting -= store.committed_units()
        held = {u for u in waiting if records.held_elsewhere(u, run_id, stall)}
        if not held or time.monotonic() >= deadline or stopped():
            return waiting - held, held
        time.sleep(poll_seconds)


def by_model(units: list[Unit]) -> list[tuple[str | None, list[Unit]]]:
    """Units grouped by their model (None: the run has one), in order of each one's first unit."""
    groups: dict[str | None, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.model, []).append(u)
    return list(groups.items())


def unit_dataset(descriptors: list[dict], slots: int, sizes: list[int] | None = None):
    """The run's first dataset: unit descriptors in blocks (pipelines/stream/unit_blocks.py cuts them,
    unless `sizes` says how)."""
    import ray.data

    sizes = block_sizes(len(descriptors), slots) if sizes is None else sizes
    units = ray.data.from_items([{UNITS: g} for g in group(descriptors, sizes)], override_num_blocks=len(sizes))
    # A block of units is one block all the way to its engine actor: never split by size (Ray
    # Data splits a UDF's output above target_max_block_size, 128 MiB by default, and makes one
    # output block per input block without it), or a unit's halves could reach two actors and
    # neither could commit it whole. Units are bounded by compute.tokens_per_unit, blocks by
    # pipelines/stream/unit_blocks.py.
    units.context.target_max_block_size = None
    return units


def _stream(spec: PipelineSpec, plan: Plan, pending: list, run_id: str, only_ids: dict[str, pa.Array] | None = None,
            model: str | None = None, stopped: Callable[[], bool] = lambda: False):
    """The summary rows of the pending units of one model. Once the run is asked to stop, no
    unit is sent to an engine: warm engines are sent none (pipelines/engine/warm_feed.py), and Ray
    Data's stream is left once its actors hold none (pipelines/stops/drain.py)."""
    spec_data = spec.model_dump(mode="json")  # the readers route rows by the whole spec
    if model is not None:
        spec = spec.for_model(model)  # the engine actors see their own model as spec.model
    resources = actor_resources(spec, units_in_flight(spec, pending))
    descriptors = [u.descriptor(pack_ids(only_ids[u.unit_id]) if only_ids is not None else None) for u in pending]
    choice = compile_choice.for_run(spec, tokens_ahead(spec, pending, only_ids), resources.max_actors)
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"enforce_eager": choice.enforce_eager})})
    engine_args = {
        "spec_data": spec.model_dump(mode="json"),
        "route_name": model,
        "model_source": plan.models[SINGLE_MODEL if model is None else model],
        "fingerprint": plan.fingerprint,
        "run_id": run_id,
        "tensor_parallel_size": resources.tensor_parallel_size(),
        "retry": only_ids is not None,
        "compile_choice": choice.to_json(),
    }
    keep_warm = keep_warm_seconds(spec)
    if keep_warm:
        yield from _stream_warm(spec, spec_data, engine_args, descriptors, resources, keep_warm, stopped)
        return
    units = unit_dataset(descriptors, resources.max_actors * resources.units_in_flight)
    unit_rows = units.map_batches(read_units, fn_kwargs={"spec_data": spec_data, "run_id": run_id}, batch_size=1,
                                  batch_format="pyarrow")
    results = unit_rows.map_batches(
        EngineActor,
        fn_constructor_kwargs=engine_args,
        batch_size=None,
        batch_format="pyarrow",
        **resources.map_batches_options(),
    )
    drain = StopDrain(Records(OutputStore(spec.output.path, spec.output.storage_options)), run_id,
                      check_seconds=max(CHECK_SECONDS, beat_seconds(resources.max_actors) / 5))
    others = fetching_threads()  # a user's own Ray Data iterations in this process, say
    rows = iter(results.iter_rows())
    for row in rows:
        drain.seen(row)
        yield row
        if stopped() and drain.may_leave():  # the units Ray Data still holds would only be skipped
            leave_stream(rows, fetching_threads() - others)
            return


def fetching_threads() -> set[threading.Thread]:
    """Ray Data's threads that fetch an iteration's blocks (ray.data's block_batching/util.py)."""
    return {t for t in threading.enumerate() if t.name == "iter_threaded"}


def leave_stream(rows, threads: set[threading.Thread]) -> None:
    """Leave Ray Data's stream before its end: close it (Ray Data shuts its execution down, with
    its actors), then wait for its fetching `threads`, which would otherwise touch Ray after the
    session ends (and Ray ends the process, exit 1)."""
    rows.close()
    for thread in threads:
        thread.join(timeout=LEAVE_STREAM_SECONDS)


def keep_warm_seconds(spec: PipelineSpec) -> float:
    """compute.keep_warm_seconds, or its default: a few minutes where a person iterates (a
    notebook, a REPL), none in the CLI, a Ray job or a nightly run."""
    if spec.compute.keep_warm_seconds is not None:
        return spec.compute.keep_warm_seconds
    return DEFAULT_KEEP_WARM_SECONDS if interactive_python() else 0.0


def interactive_python() -> bool:
    """A REPL or an IPython shell (a notebook's kernel is one); not a script, a job or a test."""
    import sys

    return hasattr(sys, "ps1") or ipython_shell() is not None


def _stream_warm(spec: PipelineSpec, spec_data: dict, engine_args: dict, descriptors: list[dict],
                 resources: ActorResources, keep_warm: float, stopped: Callable[[], bool]):
    """The units through this driver's warm engines (pipelines/engine/warm_pool.py), which stay for
    the next run."""
    from pipelines.engine.warm_feed import stream_units
    from pipelines.engine.warm_pool import POOL, engine_key

    records = Records(OutputStore(spec.output.path, spec.output.storage_options))
    engines = POOL.take(engine_key(engine_args["spec_data"], engine_args["model_source"], resources),
                        resources, keep_warm, dtype=records.loaded_dtype(engine_args["route_name"] or MODEL))
    try:
        yield from stream_units(engines, {**engine_args, "read_spec_data": spec_data}, descriptors,
                                resources.units_in_flight, max_sends=2 * spec.compute.max_attempts + 2,
                                stopped=stopped)
    finally:
        POOL.give_back(engines, (spec.output.path, spec.output.storage_options))
