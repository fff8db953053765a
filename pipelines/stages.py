"""The two Ray Data stages of a run, as plain callables that map_batches runs.

read_units (CPU tasks): one unit descriptor in, the unit's rows out, each with its rendered
prompt or the reason it has none. One unit becomes one block, so the engine stage sees whole
units.

UnitGenerator (engine actors): generates a unit's rows, commits the unit's results, and
returns one summary row per unit. Committing inside the actor means results never travel back
through the driver, and a unit is either wholly committed or not at all.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from cluster.node_facts import this_node
from cluster.preemption import check_notice, drain_this_node
from operators.engine import EngineConfig, VLLMEngine, engine_env
from operators.generate import GenerateOperator
from operators.model_store import resolve_model
from operators.prompts import PromptRenderer
from pipelines.output import OutputStore
from pipelines.records import HEARTBEAT_SECONDS, Records, new_id
from pipelines.spec import PipelineSpec

UNIT, UNIT_ROWS, ID, PROMPT, ERROR = "__unit", "__unit_rows", "__id", "__prompt", "__error"

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
        ("committed", pa.bool_()),
    ]
)


def read_unit_rows(path: str, start: int, stop: int, columns: list[str], storage_options: dict) -> pa.Table:
    """Rows [start, stop) of one Parquet file, reading only the row groups that hold them."""
    fs, fpath = url_to_fs(path, **storage_options)
    with fs.open(fpath, "rb") as fh:
        pf = pq.ParquetFile(fh)
        groups, first_row, offset = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if offset < stop and offset + n > start:
                groups.append(g)
                first_row = offset if first_row is None else first_row
            offset += n
        table = pf.read_row_groups(groups, columns=columns)
    return table.slice(start - (first_row or 0), stop - start)


def read_units(batch: pa.Table, spec_data: dict[str, Any]) -> pa.Table:
    spec = PipelineSpec.model_validate(spec_data)
    renderer = PromptRenderer(spec.input.prompt_column, spec.input.template)
    columns = spec.input.columns_read()
    tables = []
    for unit in batch.to_pylist():
        rows = read_unit_rows(unit["path"], unit["start"], unit["stop"], columns, spec.input.storage_options)
        prompts, errors = renderer.render({c: rows.column(c).to_pylist() for c in renderer.columns})
        n = rows.num_rows
        tables.append(
            pa.table(
                {
                    UNIT: pa.array([unit["unit_id"]] * n, pa.string()),
                    UNIT_ROWS: pa.array([unit["stop"] - unit["start"]] * n, pa.int64()),
                    ID: rows.column(spec.input.id_column),
                    PROMPT: pa.array(prompts, pa.string()),
                    ERROR: pa.array(errors, pa.string()),
                }
            )
        )
    return pa.concat_tables(tables)


def result_table(spec: PipelineSpec, ids: pa.ChunkedArray, cols: dict[str, list], fingerprint: str) -> pa.Table:
    """A unit's results in the output schema; the input id keeps its own name and type."""
    n = len(ids)
    return pa.table(
        {
            spec.input.id_column: ids,
            "output": pa.array(cols["output"], pa.string()),
            "prompt_tokens": pa.array(cols["prompt_tokens"], pa.int64()),
            "completion_tokens": pa.array(cols["completion_tokens"], pa.int64()),
            "finish_reason": pa.array(cols["finish_reason"], pa.string()),
            "error": pa.array(cols["error"], pa.string()),
            "model": pa.array([spec.model.name] * n, pa.string()),
            "spec_fingerprint": pa.array([fingerprint] * n, pa.string()),
        }
    )


class UnitGenerator:
    """An engine actor: loads the model once, then generates and commits whole units, and
    keeps the records its cost is computed from (pipelines/records.py)."""

    def __init__(self, spec_data: dict[str, Any], fingerprint: str, run_id: str, tensor_parallel_size: int = 1):
        started_at = time.time()  # the actor's node-seconds are counted from here
        self.spec = spec = PipelineSpec.model_validate(spec_data)
        self.fingerprint = fingerprint
        self.run_id = run_id
        self.actor_id = new_id()
        # Before vLLM (and torch) are imported: thread counts are read once, at load.
        os.environ.update(engine_env(spec.compute.gpus_per_actor, spec.compute.engine_threads))
        if "torch" in sys.modules:
            import torch

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        model_path = resolve_model(spec.model.name)
        self.engine = VLLMEngine(
            EngineConfig(
                model_path=str(model_path),
                dtype=spec.model.dtype,
                max_model_len=spec.model.max_model_len,
                quantization=spec.model.quantization,
                enforce_eager=spec.model.enforce_eager,
                tensor_parallel_size=tensor_parallel_size,
                seed=spec.sampling.seed or 0,
                engine_kwargs=spec.model.engine_kwargs,
            )
        )
        self.generate = GenerateOperator(
            self.engine,
            sampling=spec.sampling.model_dump(),
            system_prompt=spec.input.system_prompt,
            chat=spec.input.format == "chat",
        )
        self.store = OutputStore(spec.output.path, spec.output.storage_options)
        self.records = Records(self.store)
        self.node = this_node(spec.cost, spec.compute.spot_resource, spec.compute.gpus_per_actor,
                              int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count() or 1)
        self.started_at = started_at
        self.records.actor_started(self.actor_id, {
            "run_id": run_id, "pid": os.getpid(), "started_at": started_at, "loaded_at": time.time(),
            **self.node.to_json(),
        })
        threading.Thread(target=self._beat, daemon=True).start()
        self._busy = threading.Lock()  # held while a unit is generated and committed
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
        with self._busy:
            self.records.actor_beat(self.actor_id, {"time": time.time(), "drained": notice.detail})
            os._exit(0)  # not ray.actor.exit_actor(): an intended exit would not be restarted

    def _beat(self) -> None:
        """Say we are alive; the last beat bounds when a preempted actor stopped costing."""
        while True:
            try:
                self.records.actor_beat(self.actor_id, {"time": time.time()})
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

    def _summary(self, unit_id: str, skipped: str | None = None, **stats: Any) -> dict[str, Any]:
        base = {"rows": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "engine_seconds": 0.0,
                "committed": False}
        return {**base, **stats, "unit_id": unit_id, "actor_id": self.actor_id, "skipped": skipped,
                "actor_started_at": self.started_at, "actor_usd_per_second": self.node.usd_per_second}

    def _run_unit(self, unit_id: str, rows: pa.Table) -> dict[str, Any]:
        if self._draining:
            os._exit(0)  # take no new unit on a node that is going away; Ray retries it elsewhere
        with self._busy:
            return self._run_unit_now(unit_id, rows)

    def _run_unit_now(self, unit_id: str, rows: pa.Table) -> dict[str, Any]:
        stop = self.records.stop_requested(self.run_id)
        if stop:
            return self._summary(unit_id, skipped=f"stop: {stop}")
        if self.store.is_committed(unit_id):
            # Another run on the same output, or an attempt thought lost, finished it first:
            # spend no engine time on it.
            return self._summary(unit_id, skipped="committed")
        if self.records.held_elsewhere(unit_id, self.run_id):
            # Another run is generating it: move on (the driver waits for it at the end)
            # instead of racing it, which would leave two runs in lockstep on every unit.
            return self._summary(unit_id, skipped="held by another run")
        attempt = self.records.start_attempt(
            unit_id, {"actor_id": self.actor_id, "run_id": self.run_id, "node": self.node.node_id,
                      "pid": os.getpid(), "time": time.time()})
        started = time.monotonic()
        try:
            cols = self.generate(rows.column(PROMPT).to_pylist(), rows.column(ERROR).to_pylist())
        except Exception as err:
            # Recorded, then raised: Ray retries the unit; status shows why it failed.
            self.records.end_attempt(unit_id, attempt, {"outcome": "failed", "error": repr(err)[:2000],
                                                        "time": time.time()})
            raise
        seconds = time.monotonic() - started
        table = result_table(self.spec, rows.column(ID), cols, self.fingerprint)
        stats = {
            "unit_id": unit_id,
            "rows": table.num_rows,
            "errors": sum(e is not None for e in cols["error"]),
            "prompt_tokens": sum(cols["prompt_tokens"]),
            "completion_tokens": sum(cols["completion_tokens"]),
            "engine_seconds": seconds,
        }
        committed = self.store.commit(unit_id, table, stats)
        outcome = "committed" if committed else "already committed"
        self.records.end_attempt(unit_id, attempt, {"outcome": outcome, "time": time.time(), **stats})
        return self._summary(**stats, committed=committed)
