"""The engine stage of a run, a callable class that map_batches runs on actors (the stage
before it, pipelines/unit_rows.py, reads and renders each unit's rows).

UnitGenerator (engine actors): generates a unit's rows, commits the unit's results, and
returns one summary row per unit. Committing inside the actor means results never travel back
through the driver, and a unit is either wholly committed or not at all.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.cpu_priority import restore_priority
from cluster.node_facts import this_node
from cluster.preemption import check_notice, drain_this_node
from operators.engine import EngineConfig, VLLMEngine, engine_env
from operators.failures import ENGINE_ERROR, PREEMPTED_EXHAUSTED
from operators.feeder import EngineFailed, EngineFeeder
from operators.generate import GenerateOperator
from operators.model_store import resolve_model
from operators.response_cache import ANSWER_COLUMNS, ResponseCache, request_key
from pipelines.output import STATS_KEY, OutputStore
from pipelines.plan import model_identity
from pipelines.records import HEARTBEAT_SECONDS, Records, new_id
from pipelines.spec import PipelineSpec
from pipelines.unit_rows import ERROR, ID, MAX_TOKENS, PROMPT, UNIT, UNIT_ROWS


SUMMARY_SCHEMA = pa.schema(
    [
        ("unit_id", pa.string()),
        ("actor_id", pa.string()),
        ("actor_started_at", pa.float64()),
        ("actor_usd_per_second", pa.float64()),
        ("skipped", pa.string()),  # why a unit was not run: "committed" already, or "stop: budget"
        ("rows", pa.int64()),
        ("errors", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("engine_seconds", pa.float64()),
        ("reused_rows", pa.int64()),  # answered by a duplicate or the cache, at no engine cost
        ("reused_completion_tokens", pa.int64()),
        ("errors_by_class", pa.string()),  # JSON {class: rows}
        ("committed", pa.bool_()),
    ]
)


RUN_CACHE = "_spotbatch/cache"


def unit_counts(unit_id: str, cols: dict[str, list], engine_seconds: float) -> dict[str, Any]:
    """A unit's counts. Tokens are what the engine processed; rows answered by a duplicate or the
    cache cost no engine time and are counted apart."""
    engine = [i for i, s in enumerate(cols["served_from"]) if s == "engine"]
    reused = [i for i, s in enumerate(cols["served_from"]) if s in ("duplicate", "cache")]
    by_class = dict(Counter(c for c in cols["error_class"] if c is not None))
    return {
        "unit_id": unit_id,
        "rows": len(cols["error"]),
        "errors": sum(by_class.values()),
        "errors_by_class": by_class,
        "prompt_tokens": sum(cols["prompt_tokens"][i] for i in engine),
        "completion_tokens": sum(cols["completion_tokens"][i] for i in engine),
        "reused_rows": len(reused),
        "reused_completion_tokens": sum(cols["completion_tokens"][i] for i in reused),
        "engine_seconds": engine_seconds,
    }


def result_table(spec: PipelineSpec, ids: pa.ChunkedArray, cols: dict[str, list], fingerprint: str) -> pa.Table:
    """A unit's results in the output schema; the input id keeps its own name and type."""
    n = len(ids)
    return pa.table(
        {
            spec.input.id_column: ids,
            "output": pa.array(cols["output"], pa.string()),
            "prompt_tokens": pa.array(cols["prompt_tokens"], pa.int64()),
            "completion_tokens": pa.array(cols["completion_tokens"], pa.int64()),
            "cached_prompt_tokens": pa.array(cols["cached_prompt_tokens"], pa.int64()),
            "finish_reason": pa.array(cols["finish_reason"], pa.string()),
            "error": pa.array(cols["error"], pa.string()),
            "error_class": pa.array(cols["error_class"], pa.string()),
            "served_from": pa.array(cols["served_from"], pa.string()),
            "model": pa.array([spec.model.name] * n, pa.string()),
            "spec_fingerprint": pa.array([fingerprint] * n, pa.string()),
        }
    )


class UnitGenerator:
    """An engine actor: loads the model once, then generates and commits whole units, and
    keeps the records its cost is computed from (pipelines/records.py)."""

    def __init__(self, spec_data: dict[str, Any], fingerprint: str, run_id: str, tensor_parallel_size: int = 1,
                 retry: bool = False, route_name: str | None = None):
        started_at = time.time()  # the actor's node-seconds are counted from here
        self.retry = retry  # units are failed rows of committed units, merged back when done
        self.spec = spec = PipelineSpec.model_validate(spec_data)
        self.fingerprint = fingerprint
        self.run_id = run_id
        self.actor_id = new_id()
        self.niceness = restore_priority()  # before the engine's threads exist: they inherit it
        # Before vLLM (and torch) are imported: thread counts are read once, at load.
        os.environ.update(engine_env(spec.compute.gpus_per_actor, spec.compute.engine_threads))
        if "torch" in sys.modules:
            import torch

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        model_path = resolve_model(spec.model.name)
        config = EngineConfig(
            model_path=str(model_path),
            dtype=spec.model.dtype,
            max_model_len=spec.model.max_model_len,
            quantization=spec.model.quantization,
            enforce_eager=spec.model.enforce_eager,
            tensor_parallel_size=tensor_parallel_size,
            seed=spec.sampling.seed or 0,
            engine_kwargs=spec.model.engine_kwargs,
        )
        # Built on the feeder's thread, which alone runs it (operators/feeder.py says why).
        self.feeder = EngineFeeder(lambda: VLLMEngine(config), spec.compute.max_tokens_in_flight)
        self.engine = self.feeder.engine
        self.generate = GenerateOperator(
            self.engine,
            self.feeder,
            sampling=spec.sampling.model_dump(),
            system_prompt=spec.input.system_prompt,
            fmt=spec.input.format,
            timeout_seconds=spec.compute.request_timeout_seconds,
        )
        self.store = OutputStore(spec.output.path, spec.output.storage_options)
        self.records = Records(self.store)
        self.model_key = json.dumps(model_identity(spec), sort_keys=True, default=str)
        # The run's own cache (inside its output) makes duplicates generated once across actors
        # and resumes; cache.path shares answers across runs.
        cache_path = spec.cache.path or (f"{spec.output.path.rstrip('/')}/{RUN_CACHE}" if spec.cache.dedup else None)
        cache_options = spec.cache.storage_options if spec.cache.path else spec.output.storage_options
        self.cache = ResponseCache(cache_path, cache_options) if cache_path else None
        self.node = this_node(spec.cost, spec.compute.spot_resource, spec.compute.gpus_per_actor,
                              int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count() or 1)
        self.started_at = started_at
        self.records.actor_started(self.actor_id, {
            "run_id": run_id, "pid": os.getpid(), "started_at": started_at, "loaded_at": time.time(),
            "niceness": self.niceness, "model": route_name or spec.model.name,
            **self.node.to_json(),
        })
        threading.Thread(target=self._beat, daemon=True).start()
        self._in_hand = 0  # units being generated or committed (several, on their own threads)
        self._idle = threading.Condition()
        self._draining = False
        if spec.compute.preemption_notice:
            threading.Thread(target=self._watch_notice, daemon=True).start()

    def _watch_notice(self) -> None:
        """On a spot termination notice: tell Ray to place nothing new on this node, finish
        and commit the unit in hand, then leave. Ray restarts the actor on another node and
        sends it the units this one had queued: nothing in flight is lost."""
        cfg = self.spec.compute.preemption_notice
        while (notice := check_notice(cfg.kind, cfg.url, self.node.node_id)) is None:
            time.sleep(cfg.poll_seconds)
        self._draining = True
        self.records.actor_beat(self.actor_id, {"time": time.time(), "notice": notice.detail})
        drain_this_node(f"spot notice ({notice.source}): {notice.detail}", cfg.window_seconds)
        with self._idle:
            self._idle.wait_for(lambda: self._in_hand == 0)
            self.records.actor_beat(self.actor_id, {"time": time.time(), "drained": notice.detail})
            os._exit(0)  # not ray.actor.exit_actor(): an intended exit would not be restarted

    def _beat(self) -> None:
        """Say we are alive; the last beat bounds when a preempted actor stopped costing."""
        while True:
            try:
                self.records.actor_beat(self.actor_id, {"time": time.time(), "engine": self.feeder.stats.to_json()})
            except Exception:  # a missed beat only makes the estimate of its end earlier
                pass
            time.sleep(HEARTBEAT_SECONDS)

    def __call__(self, batch: pa.Table) -> pa.Table:
        summaries = []
        for unit_id in pc.unique(batch.column(UNIT)).to_pylist():
            rows = batch.filter(pc.equal(batch.column(UNIT), unit_id))
            expected = rows.column(UNIT_ROWS)[0].as_py()
            if rows.num_rows != expected:
                # A unit must arrive whole to be committed whole; never commit a part of one.
                raise RuntimeError(f"unit {unit_id} arrived with {rows.num_rows} of its {expected} rows")
            summaries.append(self._run_unit(unit_id, rows))
        return pa.Table.from_pylist(summaries, schema=SUMMARY_SCHEMA)

    def _commit(self, unit_id: str, table: pa.Table, stats: dict[str, Any]) -> bool:
        """Commit a unit's results once; in a retry run, merge them into its committed ones."""
        if self.retry:
            return self._merge_retried(unit_id, table, stats)
        return self.store.commit(unit_id, table, stats)

    def _merge_retried(self, unit_id: str, retried: pa.Table, stats: dict[str, Any]) -> bool:
        """Put the retried rows in place of their error records in the unit's results. The
        unit's footer counts are recomputed from the merged rows; `stats` (what the caller
        records for the attempt) keeps only this retry's engine tokens."""
        id_col = self.spec.input.id_column
        old = self.store.read_unit(unit_id)
        old_meta = json.loads((old.schema.metadata or {})[STATS_KEY])
        kept = old.filter(pc.invert(pc.is_in(old.column(id_col), value_set=retried.column(id_col))))
        merged = pa.concat_tables([kept.replace_schema_metadata(None), retried.cast(kept.schema)])
        cols = {c: merged.column(c).to_pylist() for c in ("error", "error_class", "served_from",
                                                           "prompt_tokens", "completion_tokens")}
        footer = unit_counts(unit_id, cols, old_meta.get("engine_seconds", 0.0) + stats["engine_seconds"])
        # Tokens in the footer: what the engine did for this unit over all its attempts.
        for key in ("prompt_tokens", "completion_tokens"):
            footer[key] = old_meta.get(key, 0) + stats[key]
        self.store.replace(unit_id, merged, footer)
        return True

    def _request_keys(self, prompts: list[str | None], max_tokens: list[int | None]) -> list[str | None]:
        """Keys that name identical requests, or all None when dedup is off."""
        if not self.spec.cache.dedup and not self.cache:
            return [None] * len(prompts)
        spec = self.spec
        sampling = spec.sampling.model_dump()
        return [None if p is None else request_key(
            self.model_key, p, spec.input.system_prompt, spec.input.format,
            {**sampling, "max_tokens": m or sampling["max_tokens"]}) for p, m in zip(prompts, max_tokens)]

    def _add_to_cache(self, keys: list[str | None], cols: dict[str, list]) -> None:
        """Share what the engine generated (never errors, never answers it got from elsewhere)."""
        if not self.cache or not self.spec.cache.write:
            return
        rows = [i for i, k in enumerate(keys) if k is not None and cols["served_from"][i] == "engine"]
        try:
            self.cache.add([keys[i] for i in rows], {c: [cols[c][i] for i in rows] for c in ANSWER_COLUMNS})
        except Exception as err:  # the unit is committed; a cache that cannot be written only costs later runs
            print(f"spotbatch: could not add to the response cache: {err!r}", file=sys.stderr)

    def _exit_for_a_new_engine(self) -> None:
        """The engine is gone and this process cannot make another: leave, once the other
        units in hand have failed too, and Ray starts a fresh actor and retries them all."""
        with self._idle:
            self._in_hand -= 1
            self._idle.wait_for(lambda: self._in_hand == 0, timeout=60)
        os._exit(1)

    def _exhausted(self, unit_id: str) -> tuple[str, str] | None:
        """(class, message) when the unit failed or was lost on every allowed attempt."""
        tries = [t for t in self.records.unit_attempts(unit_id).values() if "start" in t
                 and (not self.retry or t["start"].get("run_id") == self.run_id)]  # a retry starts afresh
        failed = [t["end"] for t in tries if t.get("end", {}).get("outcome") == "failed"]
        lost = [t for t in tries if "end" not in t]
        if len(failed) + len(lost) < self.spec.compute.max_attempts:
            return None
        if failed:
            return ENGINE_ERROR, (f"the engine failed on this row's unit {len(failed)} times "
                                  f"({len(lost)} more lost); last: {failed[-1].get('error', '')[:500]}")
        return PREEMPTED_EXHAUSTED, f"this row's unit was lost with its node {len(lost)} times"

    def _commit_failed(self, unit_id: str, rows: pa.Table, error_class: str, message: str) -> dict[str, Any]:
        """Give up on a unit: every row becomes an error record (a row that already had one keeps
        it), so the run ends and `spotbatch run --retry-failed` can try again later."""
        prior = rows.column(ERROR).to_pylist()
        n = rows.num_rows
        cols = {"output": [None] * n, "prompt_tokens": [0] * n, "completion_tokens": [0] * n,
                "cached_prompt_tokens": [0] * n, "finish_reason": [None] * n,
                "error": [p or message for p in prior],
                "error_class": ["bad_input" if p else error_class for p in prior],
                "served_from": [None] * n}
        table = result_table(self.spec, rows.column(ID), cols, self.fingerprint)
        stats = unit_counts(unit_id, cols, 0.0)
        return self._summary(**stats, committed=self._commit(unit_id, table, stats))

    def _summary(self, unit_id: str, skipped: str | None = None, **stats: Any) -> dict[str, Any]:
        base = {"rows": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "engine_seconds": 0.0,
                "reused_rows": 0, "reused_completion_tokens": 0, "committed": False}
        stats["errors_by_class"] = json.dumps(stats.get("errors_by_class") or {})
        return {**base, **stats, "unit_id": unit_id, "actor_id": self.actor_id, "skipped": skipped,
                "actor_started_at": self.started_at, "actor_usd_per_second": self.node.usd_per_second}

    def _run_unit(self, unit_id: str, rows: pa.Table) -> dict[str, Any]:
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
        try:
            return self._run_unit_now(unit_id, rows)
        finally:
            self.feeder.release_turn()  # a unit that submitted nothing (skipped, all cached)
            with self._idle:
                self._in_hand -= 1
                self._idle.notify_all()

    def _run_unit_now(self, unit_id: str, rows: pa.Table) -> dict[str, Any]:
        stop = self.records.stop_requested(self.run_id)
        if stop:
            return self._summary(unit_id, skipped=f"stop: {stop}")
        if not self.retry and self.store.is_committed(unit_id):
            # Another run on the same output, or an attempt thought lost, finished it first:
            # spend no engine time on it.
            return self._summary(unit_id, skipped="committed")
        if self.records.held_elsewhere(unit_id, self.run_id):
            # Another run is generating it: move on (the driver waits for it at the end)
            # instead of racing it, which would leave two runs in lockstep on every unit.
            return self._summary(unit_id, skipped="held by another run")
        exhausted = self._exhausted(unit_id)
        if exhausted:
            return self._commit_failed(unit_id, rows, *exhausted)
        attempt = self.records.start_attempt(
            unit_id, {"actor_id": self.actor_id, "run_id": self.run_id, "node": self.node.node_id,
                      "pid": os.getpid(), "time": time.time()})
        started = time.monotonic()
        prompts, max_tokens = rows.column(PROMPT).to_pylist(), rows.column(MAX_TOKENS).to_pylist()
        try:
            keys = self._request_keys(prompts, max_tokens)
            cached = self.cache.lookup(keys) if self.cache and any(keys) else {}
            cols = self.generate(prompts, rows.column(ERROR).to_pylist(), max_tokens, keys=keys, cached=cached)
        except Exception as err:
            # Recorded, then raised: Ray retries the unit; status shows why it failed.
            self.records.end_attempt(unit_id, attempt, {"outcome": "failed", "error": repr(err)[:2000],
                                                        "time": time.time()})
            if isinstance(err, EngineFailed):
                self._exit_for_a_new_engine()
            raise
        seconds = time.monotonic() - started
        table = result_table(self.spec, rows.column(ID), cols, self.fingerprint)
        stats = unit_counts(unit_id, cols, seconds)
        committed = self._commit(unit_id, table, stats)
        if committed:
            self._add_to_cache(keys, cols)
        outcome = "committed" if committed else "already committed"
        self.records.end_attempt(unit_id, attempt, {"outcome": outcome, "time": time.time(), **stats,
                                                    "engine": self.feeder.stats.to_json()})
        return self._summary(**stats, committed=committed)
