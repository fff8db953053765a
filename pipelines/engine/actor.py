"""The engine stage of a run, a callable class that map_batches runs on actors (the stage
before it, pipelines/stream/unit_rows.py, reads and renders each unit's rows).

EngineActor is an engine actor's lifecycle, in NeMo Curator's terms: its setup (the
constructor, as Ray Data's callable-class contract has it: prepare the process, load the
engine, pipelines/engine/start.py), bind (the run it serves: a warm engine is bound again for
each run), process_batch (`__call__`: a block of units) and no teardown (an engine that must
go exits its process, and Ray restarts or retires the actor). What it watches on its own
threads is pipelines/engine/watch.py's. What happens to each unit it is handed, and how
exactly-once is kept, is pipelines/unit/protocol.py's. Committing inside the actor means
results never travel back through the driver, and a unit is either wholly committed or not
at all.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster import storage_requests
from cluster.models import ModelChangedError, ModelSource
from cluster.node_facts import NodeFacts, this_node
from operators.embed import EmbedOperator
from operators.feeder import EngineFailed
from operators.generate import GenerateOperator
from operators.tokens import PromptForm
from pipelines.cache.response_cache import ResponseCache
from pipelines.engine.binding import RunBinding, RunRequest
from pipelines.engine.in_hand import UnitsInHand
from pipelines.engine.start import EngineLoad, prepare_process, start_engine
from pipelines.engine.watch import Beats, quiet_after_stop, watch_notice
from pipelines.log import console
from pipelines.redact import redact_url
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.record_types import ABSENT, ActorRecord
from pipelines.store.records import Records, beat_seconds, new_id
from pipelines.stream.unit_rows import ERROR, INPUT_CHANGED_ROWS, STOPPED_ROWS, UNIT, UNIT_ROWS, UNREADABLE_ROWS
from pipelines.unit.protocol import (
    SUMMARY_SCHEMA,
    Skip,
    UnitContext,
    UnitOutcome,
    UnitProtocol,
    adapter_cache_keys,
    model_cache_key,
    outcome_row,
)

__all__ = ["MODEL", "EngineActor", "RunBinding", "RunRequest"]

RUN_CACHE = "_spotbatch/cache"
MODEL = "model"  # the record name of `model` (routed models go by their names)
STOP_POLL_SECONDS = 2.0  # how often an engine of Ray Data's stage looks for its run's stop
UNREAD = {UNREADABLE_ROWS: Skip.STORAGE_ERROR, INPUT_CHANGED_ROWS: Skip.INPUT_CHANGED}  # a marker's kind: why


class EngineActor:
    """An engine actor: loads the model once, then generates and commits whole units, and
    keeps the records its cost is computed from (pipelines/store/records.py)."""

    def __init__(self, tensor_parallel_size: int = 1, compile_choice: dict[str, Any] | None = None, *,
                 started_at: float | None = None, quiet_on_stop: bool = True, **run: Any):
        """`run`: a RunRequest's fields, by keyword (Ray Data's fn_constructor_kwargs, and
        pipelines/engine/host.py's context); `started_at`: the actor's node-seconds count from
        here; `quiet_on_stop`: Ray Data's stage (a warm engine's feed sends no unit after a stop)."""
        started_at = started_at or time.time()
        console()  # in a Ray worker: its lines reach stdout/stderr, which Ray forwards to the driver
        storage_requests.count_s3_requests()  # before its first storage call: its records hold the count
        self.requests_since: dict[str, int] = {}  # its S3 requests count for its run from here: all of them
        request = RunRequest(**run)
        spec = self.spec = PipelineSpec.model_validate(request.spec_data)
        self.engine_id = new_id()  # the engine's own id; its first run's record goes by it
        self.niceness = prepare_process(spec)
        # What the driver chose (pipelines/engine/compile_choice.py); without it, the spec as written.
        self.compile_choice = compile_choice or {"enforce_eager": spec.model.enforce_eager is not False,
                                                 "reason": "not chosen by the driver"}
        self.bound: RunBinding | None = None
        self.units = UnitsInHand()
        self._setup(request, tensor_parallel_size)
        self.bind(request, started_at=started_at, loaded_at=time.time())
        self.beats = Beats(lambda: self.bound, self._requests)
        threading.Thread(target=self.beats.forever, args=(self.feeder.stats.to_json,), daemon=True).start()
        if quiet_on_stop:
            # A stop read every few seconds (at most one GET a second: StopFlag), less in a large fleet.
            period = max(STOP_POLL_SECONDS, self.bound.beat_seconds / 2.5)
            threading.Thread(target=quiet_after_stop, args=(self.units, self.bound, period, lambda: self.bound),
                             daemon=True).start()
        if spec.compute.preemption_notice:
            threading.Thread(target=watch_notice, args=(spec.compute.preemption_notice, self.units, self.beats),
                             daemon=True).start()

    def _setup(self, request: RunRequest, tensor_parallel_size: int) -> None:
        """Load the engine (pipelines/engine/start.py) with the weights the run pinned."""
        records = Records(OutputStore(self.spec.output.path, self.spec.output.storage_options))
        load = EngineLoad(self.spec, ModelSource.from_json(request.model_source), request.route_name or MODEL,
                          tensor_parallel_size, self.compile_choice["enforce_eager"], request.adapter_sources)
        started = start_engine(load, records, self.actor_id)
        self.feeder, self.fetched, self.loaded = started.feeder, started.fetched, started.loaded
        self.compile_choice = {**self.compile_choice, **started.start}

    @property
    def run_id(self) -> str | None:
        return self.bound.run_id if self.bound else None

    @property
    def actor_id(self) -> str:
        """The record this engine writes now: its current run's."""
        return self.bound.actor_id if self.bound else self.engine_id

    def bind(self, request: RunRequest, *, started_at: float, loaded_at: float,
             warm: dict[str, Any] | None = None) -> RunBinding:
        """Serve one run: its output, records, cache and sampling, with the engine this actor
        loaded. A warm engine (pipelines/engine/warm_pool.py) is bound again for each run it serves,
        under a new actor record each time (an output it served before already holds its last
        one); `warm` says since when it waited for this one, and the record starts there, so
        the time it was held between runs is priced in this run's ledger. Units already handed
        to the engine keep the binding of their own run."""
        spec = PipelineSpec.model_validate(request.spec_data)
        model_name = request.route_name or MODEL
        actor_id = self.engine_id if self.bound is None else new_id()
        if warm is not None:  # a warm engine's requests before this run were its earlier runs'
            self.requests_since = storage_requests.snapshot()
        records = Records(OutputStore(spec.output.path, spec.output.storage_options))
        if warm is not None and records.pin_loaded_dtype(model_name, self.loaded, actor_id) != self.loaded:
            raise ModelChangedError(f"this warm engine loaded {self.loaded}; the output's engines load "
                                    f"{records.loaded_dtype(model_name)}")
        node = this_node(spec.cost, spec.compute.spot_resource, spec.compute.gpus_per_actor,
                         int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count() or 1)
        protocol = self._protocol(spec, request, actor_id, node, records)
        # A large fleet beats less often (pipelines/store/records.py says why that is safe).
        beat_period = beat_seconds(spec.compute.max_actors or spec.compute.actors or 1)
        records.actor_started(actor_id, ActorRecord(
            beat_seconds=beat_period, engine_id=self.engine_id, run_id=request.run_id, pid=os.getpid(),
            started_at=started_at, loaded_at=loaded_at, niceness=self.niceness,
            model=model_name if request.route_name else redact_url(spec.model.name), model_source=self.fetched,
            loaded_dtype=self.loaded, compile=self.compile_choice, node=node.to_json(), warm=warm or ABSENT))
        self.bound = RunBinding(request.run_id, actor_id, spec, protocol, records, node, beat_period, started_at)
        return self.bound

    def _protocol(self, spec: PipelineSpec, request: RunRequest, actor_id: str, node: NodeFacts,
                  records: Records) -> UnitProtocol:
        """The unit protocol of one run, on this engine: its operator is the task's."""
        embeds = spec.task == "embed"
        operator = EmbedOperator if embeds else GenerateOperator
        generate = operator(
            self.feeder.engine,
            self.feeder,
            sampling=spec.embed.model_dump() if embeds else spec.sampling.model_dump(),
            form=PromptForm(spec.input.system_prompt, spec.input.format),
            timeout_seconds=spec.compute.request_timeout_seconds,
        )
        # The run's own cache (inside its output) makes duplicates generated once across actors
        # and resumes; cache.path shares answers across runs.
        cache_path = spec.cache.path or (f"{spec.output.path.rstrip('/')}/{RUN_CACHE}" if spec.cache.dedup else None)
        cache_options = spec.cache.storage_options if spec.cache.path else spec.output.storage_options
        context = UnitContext(
            spec, fingerprint=request.fingerprint, run_id=request.run_id, actor_id=actor_id, node_id=node.node_id,
            retry=request.retry, engine_stats=self.feeder.stats.to_json, storage_requests=self._requests,
            # The dtype vLLM loaded counts too: `auto` is float32 on some CPUs and bf16 elsewhere.
            model_key=model_cache_key(spec, request.model_source, self.loaded),
            adapter_keys=adapter_cache_keys(request.adapter_sources),
            embedding_size=self._embedding_size(spec))
        return UnitProtocol(context, generate, store=records.store,
                            cache=ResponseCache(cache_path, cache_options) if cache_path else None)

    def _embedding_size(self, spec: PipelineSpec) -> int | None:
        """The numbers in each of the run's vectors; None when rows ask for their own (a batch
        file's requests may each name `dimensions`), or the run makes none."""
        if spec.task != "embed" or spec.input.sampling_column:
            return None
        return spec.embed.dimensions or self.feeder.engine.embedding_size()

    def _requests(self) -> dict[str, int]:
        """This actor's S3 requests for its current run (cluster/storage_requests.py)."""
        return storage_requests.since(self.requests_since)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """process_batch: one block (of the run this actor was made for), a unit or several in a
        large run."""
        return self.serve(batch, self.bound)

    def serve(self, batch: pa.Table, bound: RunBinding) -> pa.Table:
        """The units of one block of run `bound`'s, run side by side (pipelines/stream/unit_blocks.py),
        since the engine's hunger, not the block, decides when each starts."""
        unit_ids = pc.unique(batch.column(UNIT)).to_pylist()
        if len(unit_ids) == 1:
            summaries = [self._unit(bound, unit_ids[0], batch)]
        else:
            with ThreadPoolExecutor(len(unit_ids), thread_name_prefix="unit") as pool:
                summaries = list(pool.map(
                    lambda u: self._unit(bound, u, batch.filter(pc.equal(batch.column(UNIT), u))), unit_ids))
        return pa.Table.from_pylist(summaries, schema=SUMMARY_SCHEMA)

    def _unit(self, bound: RunBinding, unit_id: str, rows: pa.Table) -> dict[str, Any]:
        expected = rows.column(UNIT_ROWS)[0].as_py()
        actor = {"actor_id": bound.actor_id, "actor_started_at": bound.started_at,
                 "actor_usd_per_second": bound.node.usd_per_second}
        if expected == STOPPED_ROWS:  # the read stage saw the run's stop: nothing was read, nothing to do
            return outcome_row(UnitOutcome.skipped_as(unit_id, Skip.STOP, rows.column(ERROR)[0].as_py()), actor)
        stop = bound.protocol.stopped()
        if stop:  # asked to stop: a unit that would only wait for the engine is not kept waiting
            return outcome_row(UnitOutcome.skipped_as(unit_id, Skip.STOP, stop), actor)
        if expected in UNREAD:  # its shard changed, or the storage failed the read
            with self.units.idle:  # counted even on a draining node: it generates nothing
                self.units.count += 1
            outcome = None
            try:
                outcome = bound.protocol.unreadable(unit_id, UNREAD[expected], rows.column(ERROR)[0].as_py())
            finally:
                held = self.units.release(bound.actor_id, outcome is not None)
            return outcome_row(outcome, actor, held=held)
        if rows.num_rows != expected:
            # A unit must arrive whole to be committed whole; never commit a part of one.
            raise RuntimeError(f"unit {unit_id} arrived with {rows.num_rows} of its {expected} rows")
        outcome, held = self._run_unit(bound, unit_id, rows)
        return outcome_row(outcome, actor, held=held)

    def _run_unit(self, bound: RunBinding, unit_id: str, rows: pa.Table) -> tuple[UnitOutcome, bool]:
        """The unit's outcome, and whether it counts as held (UnitsInHand.release)."""
        # Units held beyond what the engine needs wait here, before any record or engine time:
        # the engine stays full, and only started units are at risk on a lost node.
        self.feeder.wait_until_hungry()
        if self.feeder.failed:
            os._exit(1)  # the unit that saw the engine fail recorded it; Ray retries the rest
        if not self.units.enter():
            # take no new unit on a node that is going away; Ray retries it elsewhere
            self.units.wait_empty()
            os._exit(0)
        outcome = None
        try:
            outcome = bound.protocol.run(unit_id, rows)
        except EngineFailed:
            # The protocol recorded the failed attempt; this process cannot make another engine:
            # leave, once the other units in hand have failed too, and Ray starts a fresh actor
            # and retries them all.
            self.units.give_up_one(timeout=60)
            os._exit(1)
        finally:
            self.feeder.release_turn()  # a unit that submitted nothing (skipped, all cached)
            held = self.units.release(bound.actor_id, outcome is not None)
        if self.units.count == 0:
            self._beat_now()
        return outcome, held

    def _beat_now(self) -> None:
        """A beat as the engine runs out of work: its figures (steps, last request) reach the record
        even when the run ends before the next periodic beat, as a short calibration's does
        (pipelines/estimate/calibrate.py reads them). One PUT per time the engine empties."""
        try:
            self.beats.once({"engine": self.feeder.stats.to_json()})
        except Exception:  # a missed beat only leaves the periodic one to say it
            pass
