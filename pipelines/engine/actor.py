"""The engine stage of a run, a callable class that map_batches runs on actors (the stage
before it, pipelines/stream/unit_rows.py, reads and renders each unit's rows).

UnitGenerator is an engine actor's lifecycle: build the engine, beat, watch for a spot notice,
drain, and exit. What happens to each unit it is handed, and how exactly-once is kept, is
pipelines/unit_protocol.py's. Committing inside the actor means results never travel back
through the driver, and a unit is either wholly committed or not at all.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster import storage_requests
from cluster.cpu_priority import restore_priority
from cluster.models import ModelChangedError, ModelSource, resolve
from cluster.node_facts import NodeFacts, this_node
from cluster.preemption import check_notice, drain_this_node
from operators.engine import EngineConfig, VLLMEngine, engine_env
from operators.feeder import EngineFailed, EngineFeeder
from operators.generate import GenerateOperator
from operators.tokens import PromptForm
from pipelines.cache.response_cache import ResponseCache
from pipelines.engine.compile_cache import around_engine_start
from pipelines.log import console
from pipelines.redact import redact_url
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.records import Records, beat_seconds, new_id
from pipelines.stream.unit_rows import ERROR, STOPPED_ROWS, UNIT, UNIT_ROWS, UNREADABLE_ROWS
from pipelines.unit_protocol import SKIP_STOP, SUMMARY_SCHEMA, UnitOutcome, UnitProtocol, model_cache_key, outcome_row

RUN_CACHE = "_spotbatch/cache"
MODEL = "model"  # the record name of `model` (routed models go by their names)
STOP_POLL_SECONDS = 2.0  # how often an engine of Ray Data's stage looks for its run's stop


@dataclass(frozen=True)
class RunBinding:
    """What an engine serves one run with. A unit is run with the binding of the run it came
    from, end to end: a warm engine bound to the next run meanwhile never changes it."""

    run_id: str
    actor_id: str  # this engine's record in the run's output (a new one for each run it serves)
    spec: PipelineSpec
    protocol: UnitProtocol
    records: Records
    node: NodeFacts
    beat_seconds: float
    started_at: float


class UnitGenerator:
    """An engine actor: loads the model once, then generates and commits whole units, and
    keeps the records its cost is computed from (pipelines/store/records.py)."""

    def __init__(self, spec_data: dict[str, Any], fingerprint: str, run_id: str, tensor_parallel_size: int = 1,
                 *, model_source: dict[str, Any], retry: bool = False, route_name: str | None = None,
                 started_at: float | None = None, compile_choice: dict[str, Any] | None = None,
                 quiet_on_stop: bool = True):
        started_at = started_at or time.time()  # the actor's node-seconds are counted from here
        console()  # in a Ray worker: its lines reach stdout/stderr, which Ray forwards to the driver
        storage_requests.count_s3_requests()  # before its first storage call: its records hold the count
        self.requests_since: dict[str, int] = {}  # its S3 requests count for its run from here: all of them
        spec = PipelineSpec.model_validate(spec_data)
        self.engine_id = new_id()  # the engine's own id; its first run's record goes by it
        self.niceness = restore_priority()  # before the engine's threads exist: they inherit it
        # Before vLLM (and torch) are imported: thread counts are read once, at load.
        os.environ.update(engine_env(spec.compute.gpus_per_actor, spec.compute.engine_threads))
        if "torch" in sys.modules:
            import torch

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.spec = spec
        # What the driver chose (pipelines/engine/compile_choice.py); without it, the spec as written.
        self.compile_choice = compile_choice or {"enforce_eager": spec.model.enforce_eager is not False,
                                                 "reason": "not chosen by the driver"}
        self.bound: RunBinding | None = None
        records = Records(OutputStore(spec.output.path, spec.output.storage_options))
        self.fetched, self.loaded = self._load_engine(records, ModelSource.from_json(model_source),
                                                      route_name or MODEL, tensor_parallel_size)
        self._in_hand = 0  # units being generated or committed (several, on their own threads)
        self._held: Counter[str] = Counter()  # actor record -> units of its run that were in hand
        self._quiet: set[str] = set()  # actor records that said they hold no unit after a stop
        self._idle = threading.Condition()
        self._draining = False
        self.bind(spec_data, fingerprint, run_id, model_source=model_source, retry=retry, route_name=route_name,
                  started_at=started_at, loaded_at=time.time())
        threading.Thread(target=self._beat, daemon=True).start()
        if quiet_on_stop:  # Ray Data's stage; a warm engine's feed sends no unit after a stop
            # A stop read every few seconds (at most one GET a second: StopFlag), less in a large fleet.
            period = max(STOP_POLL_SECONDS, self.bound.beat_seconds / 2.5)
            threading.Thread(target=self._quiet_after_stop, args=(self.bound, period), daemon=True).start()
        if spec.compute.preemption_notice:
            threading.Thread(target=self._watch_notice, daemon=True).start()

    @property
    def run_id(self) -> str | None:
        return self.bound.run_id if self.bound else None

    @property
    def actor_id(self) -> str:
        """The record this engine writes now: its current run's."""
        return self.bound.actor_id if self.bound else self.engine_id

    def bind(self, spec_data: dict[str, Any], fingerprint: str, run_id: str, *, model_source: dict[str, Any],
             retry: bool = False, route_name: str | None = None, started_at: float, loaded_at: float,
             warm: dict[str, Any] | None = None) -> RunBinding:
        """Serve one run: its output, records, cache and sampling, with the engine this actor
        loaded. A warm engine (pipelines/engine/warm_pool.py) is bound again for each run it serves,
        under a new actor record each time (an output it served before already holds its last
        one); `warm` says since when it waited for this one, and the record starts there, so
        the time it was held between runs is priced in this run's ledger. Units already handed
        to the engine keep the binding of their own run."""
        spec = PipelineSpec.model_validate(spec_data)
        model_name = route_name or MODEL
        actor_id = self.engine_id if self.bound is None else new_id()
        if warm is not None:  # a warm engine's requests before this run were its earlier runs'
            self.requests_since = storage_requests.snapshot()
        records = Records(OutputStore(spec.output.path, spec.output.storage_options))
        if warm is not None and records.pin_loaded_dtype(model_name, self.loaded, actor_id) != self.loaded:
            raise ModelChangedError(f"this warm engine loaded {self.loaded}; the output's engines load "
                                    f"{records.loaded_dtype(model_name)}")
        generate = GenerateOperator(
            self.feeder.engine,
            self.feeder,
            sampling=spec.sampling.model_dump(),
            form=PromptForm(spec.input.system_prompt, spec.input.format),
            timeout_seconds=spec.compute.request_timeout_seconds,
        )
        # The run's own cache (inside its output) makes duplicates generated once across actors
        # and resumes; cache.path shares answers across runs.
        cache_path = spec.cache.path or (f"{spec.output.path.rstrip('/')}/{RUN_CACHE}" if spec.cache.dedup else None)
        cache_options = spec.cache.storage_options if spec.cache.path else spec.output.storage_options
        node = this_node(spec.cost, spec.compute.spot_resource, spec.compute.gpus_per_actor,
                         int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count() or 1)
        protocol = UnitProtocol(
            spec, fingerprint=fingerprint, run_id=run_id, actor_id=actor_id, node_id=node.node_id,
            generate=generate, cache=ResponseCache(cache_path, cache_options) if cache_path else None,
            store=records.store, retry=retry, engine_stats=self.feeder.stats.to_json,
            # The dtype vLLM loaded counts too: `auto` is float32 on some CPUs and bf16 elsewhere.
            model_key=model_cache_key(spec, model_source, self.loaded), storage_requests=self._requests)
        # A large fleet beats less often (pipelines/store/records.py says why that is safe).
        beat_period = beat_seconds(spec.compute.max_actors or spec.compute.actors or 1)
        records.actor_started(actor_id, {
            "beat_seconds": beat_period, "engine_id": self.engine_id,
            "run_id": run_id, "pid": os.getpid(), "started_at": started_at, "loaded_at": loaded_at,
            "niceness": self.niceness, "model": model_name if route_name else redact_url(spec.model.name),
            "model_source": self.fetched, "loaded_dtype": self.loaded, "compile": self.compile_choice,
            **node.to_json(),
            **({"warm": warm} if warm else {}),
        })
        self.bound = RunBinding(run_id, actor_id, spec, protocol, records, node, beat_period, started_at)
        return self.bound

    def _load_engine(self, records: Records, source: ModelSource, model_name: str,
                     tensor_parallel_size: int) -> tuple[dict[str, Any], str]:
        """Put exactly the weights planning pinned on this node (cluster/models) and load them
        into the engine; returns how the weights got here, and the dtype loaded.

        One output, one dtype: `auto` is float32 on a CPU without bf16 and bf16 elsewhere, so
        the first engine's choice is recorded and every later engine of the run loads it."""
        spec = self.spec
        model_path, fetched = resolve(spec.model, source)
        pinned_dtype = records.loaded_dtype(model_name)
        config = EngineConfig(
            model_path=str(model_path),
            dtype=pinned_dtype or spec.model.dtype,
            max_model_len=spec.model.max_model_len,
            quantization=spec.model.quantization,
            enforce_eager=self.compile_choice["enforce_eager"],
            tensor_parallel_size=tensor_parallel_size,
            seed=spec.sampling.seed or 0,
            engine_kwargs=spec.model.engine_kwargs,
            chat_template=spec.model.chat_template,
            chat_template_kwargs=spec.model.chat_template_kwargs,
        )
        shared = spec.model.compile_cache
        began = time.time()
        # What other nodes compiled is copied in first, and what this engine compiles is shared.
        with around_engine_start(shared.path if shared else None, shared.storage_options if shared else None,
                                 compiles=not config.enforce_eager) as report:
            # Built on the feeder's thread, which alone runs it (operators/feeder.py says why).
            self.feeder = EngineFeeder(lambda: VLLMEngine(config), spec.compute.max_tokens_in_flight)
        # What the choice cost: the engine's start (its load and, compiled, its compile).
        self.compile_choice = {**self.compile_choice, "engine_start_seconds": round(time.time() - began, 2),
                               **({"cache": report.to_json()} if report else {})}
        loaded = self.feeder.engine.loaded_dtype
        if records.pin_loaded_dtype(model_name, loaded, self.actor_id) != loaded:  # another node's first engine won
            raise ModelChangedError(f"model {redact_url(spec.model.name)!r}: this engine loaded {loaded}, the run's "
                                    f"engines load {records.loaded_dtype(model_name)} (two first engines on different "
                                    f"hardware); set model.dtype to that and run again")
        return {**fetched, "dtype_from_run": pinned_dtype is not None}, loaded

    def _requests(self) -> dict[str, int]:
        """This actor's S3 requests for its current run (cluster/storage_requests.py)."""
        return storage_requests.since(self.requests_since)

    def _watch_notice(self) -> None:
        """On a spot termination notice: tell Ray to place nothing new on this node, finish
        and commit the unit in hand, then leave. Ray restarts the actor on another node and
        sends it the units this one had queued: nothing in flight is lost."""
        cfg = self.spec.compute.preemption_notice
        while (notice := check_notice(cfg.kind, cfg.url, self.bound.node.node_id)) is None:
            time.sleep(cfg.poll_seconds)
        self._draining = True
        self._beat_once({"notice": notice.detail})
        drain_this_node(f"spot notice ({notice.source}): {notice.detail}", cfg.window_seconds)
        with self._idle:
            self._idle.wait_for(lambda: self._in_hand == 0)
            self._beat_once({"drained": notice.detail})
            os._exit(0)  # not ray.actor.exit_actor(): an intended exit would not be restarted

    def _beat(self) -> None:
        """Say we are alive; the last beat bounds when a preempted actor stopped costing."""
        while True:
            try:
                self._beat_once({"engine": self.feeder.stats.to_json()})
            except Exception:  # a missed beat only makes the estimate of its end earlier
                pass
            time.sleep(self.bound.beat_seconds)

    def _beat_once(self, info: dict[str, Any]) -> None:
        bound = self.bound  # the run served now: an earlier run's record stopped at its last beat
        bound.records.actor_beat(bound.actor_id, {"time": time.time(), "period": bound.beat_seconds,
                                                  **info, "storage_requests": self._requests()})

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One block (of the run this actor was made for): a unit, or several in a large run."""
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
            return outcome_row(UnitOutcome(unit_id=unit_id, skipped=rows.column(ERROR)[0].as_py()), actor)
        stop = bound.protocol.stopped()
        if stop:  # asked to stop: a unit that would only wait for the engine is not kept waiting
            return outcome_row(UnitOutcome(unit_id=unit_id, skipped=SKIP_STOP + stop), actor)
        if expected == UNREADABLE_ROWS:  # its shard changed, or the storage failed the read
            with self._idle:
                self._in_hand += 1
            outcome = None
            try:
                outcome = bound.protocol.unreadable(unit_id, rows.column(ERROR)[0].as_py())
            finally:
                held = self._release(bound, outcome)
            return outcome_row(outcome, actor, held=held)
        if rows.num_rows != expected:
            # A unit must arrive whole to be committed whole; never commit a part of one.
            raise RuntimeError(f"unit {unit_id} arrived with {rows.num_rows} of its {expected} rows")
        outcome, held = self._run_unit(bound, unit_id, rows)
        return outcome_row(outcome, actor, held=held)

    def _release(self, bound: RunBinding, outcome: UnitOutcome | None) -> bool:
        """A unit in hand has ended; returns whether it counts among the units this engine held
        for its run's stop drain (pipelines/stops/drain.py): every unit that ended with a summary
        row before the engine said it was quiet, and none after, so the count it gave is exact."""
        with self._idle:
            self._in_hand -= 1
            counted = outcome is not None and bound.actor_id not in self._quiet
            if counted:
                self._held[bound.actor_id] += 1
            self._idle.notify_all()
        return counted

    def _quiet_after_stop(self, bound: RunBinding, period: float) -> None:
        """Once run `bound` is asked to stop and no unit is in hand, say so (pipelines/stops/drain.py):
        from then on this engine claims no unit of it (a claim reads the stop afresh), and the
        driver may leave Ray Data's stream once the rows of the units it held have arrived."""
        while self.bound is bound:
            reason = bound.protocol.stopped()
            if reason:
                with self._idle:
                    self._idle.wait_for(lambda: self._in_hand == 0)
                    held = self._held[bound.actor_id]
                    self._quiet.add(bound.actor_id)
                try:
                    bound.records.actor_quiet(bound.run_id, bound.actor_id, held)
                except Exception:  # the driver waits for our beats to stop instead
                    pass
                return
            time.sleep(period)

    def _run_unit(self, bound: RunBinding, unit_id: str, rows: pa.Table) -> tuple[UnitOutcome, bool]:
        """The unit's outcome, and whether it counts as held (_release)."""
        # Units held beyond what the engine needs wait here, before any record or engine time:
        # the engine stays full, and only started units are at risk on a lost node.
        self.feeder.wait_until_hungry()
        if self.feeder.failed:
            os._exit(1)  # the unit that saw the engine fail recorded it; Ray retries the rest
        with self._idle:
            if self._draining:
                # take no new unit on a node that is going away; Ray retries it elsewhere
                self._idle.wait_for(lambda: self._in_hand == 0)
                os._exit(0)
            self._in_hand += 1
        outcome = None
        try:
            outcome = bound.protocol.run(unit_id, rows)
        except EngineFailed:
            # The protocol recorded the failed attempt; this process cannot make another engine.
            self._exit_for_a_new_engine()
            raise
        finally:
            self.feeder.release_turn()  # a unit that submitted nothing (skipped, all cached)
            held = self._release(bound, outcome)
        return outcome, held

    def _exit_for_a_new_engine(self) -> None:
        """The engine is gone and this process cannot make another: leave, once the other
        units in hand have failed too, and Ray starts a fresh actor and retries them all."""
        with self._idle:
            self._in_hand -= 1
            self._idle.wait_for(lambda: self._in_hand == 0, timeout=60)
        os._exit(1)
