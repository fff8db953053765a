"""`spotbatch estimate SPEC --calibrate N`: before estimating, run about N rows sampled evenly
over the input on a real engine, so the estimate's engine speed and output length are this
model's on this hardware instead of the catalog's figure and an assumed ratio.

The sample is the spec's own rows (slices spread over the pending units, as the estimate
samples them), copied to a temporary Parquet file and run by `run` with the user's spec in
every other respect: its model, prompts, sampling, chat template. Only what would make the
measurement something other than the engine's is changed: one engine (the estimate's speeds
are per engine), its own temporary output and no shared response cache (a cached answer is
not a measured one), no deadline or budget. The run keeps what it measured as engine facts
(pipelines/engine/facts.py), as every run does, so the estimate that follows reads them and
the next one needs no calibration. The user's output is never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.estimate.overhead import remember_overhead
from pipelines.spec import PipelineSpec

CALIBRATION_FILE = "calibration.parquet"


@dataclass
class Calibration:
    rows: int  # rows the calibration run was given
    seconds: float  # its wall time, engine start included
    usd: float  # what it cost, from its own ledger
    output_tokens: int
    tokens_per_second: float  # output tokens over its wall time, engine start included

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(spec: PipelineSpec, rows: int, address: str | None = None) -> Calibration:
    """Run about `rows` sampled rows of `spec` on one real engine (on the cluster at `address`,
    as `run` finds one without it); its engine facts are then this model's on this hardware."""
    from pipelines.spec import SpecError

    if rows < 1:
        raise SpecError(f"--calibrate: give a number of rows of at least 1, got {rows}")
    work = Path(tempfile.mkdtemp(prefix="spotbatch-calibrate-"))
    try:
        sample = write_sample(spec, rows, work / CALIBRATION_FILE)
        return _run(calibration_spec(spec, work), sample, address)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_sample(spec: PipelineSpec, rows: int, to: Path) -> int:
    """The input rows the sample holds (every column the run reads), written to `to`; how many."""
    from pipelines.estimate.work import SLICE_ROWS, model_sources, sample_slices
    from pipelines.planning.inputs import list_shards
    from pipelines.planning.units import make_plan
    from pipelines.stream.unit_rows import read_unit_rows

    plan = make_plan(spec, list_shards(spec.input), model_sources(spec))
    columns = spec.input.columns_read() + ([spec.route.column] if spec.routed else [])
    tables, seen = [], set()
    # Eight slices or more, so a sample of a few rows still spans the input.
    for piece in sample_slices(plan.units, rows, slice_rows=max(1, min(SLICE_ROWS, rows // 8))):
        if (piece.path, piece.start) in seen:  # a routed plan has a unit per model over one range
            continue
        seen.add((piece.path, piece.start))
        tables.append(read_unit_rows(piece.path, piece.start, piece.stop, list(dict.fromkeys(columns)),
                                     spec.input.storage_options))
    table = pa.concat_tables(tables, promote_options="permissive") if tables else None
    if table is None or table.num_rows == 0:
        from pipelines.spec import SpecError

        raise SpecError("--calibrate: the input has no rows to run")
    pq.write_table(table, to)
    return table.num_rows


def calibration_spec(spec: PipelineSpec, work: Path) -> PipelineSpec:
    """The user's spec on the sample: one engine, a temporary output, no shared cache, no stop."""
    data = spec.model_dump(mode="json", exclude_unset=True)
    data["input"] = {**data.get("input", {}), "paths": [str(work / CALIBRATION_FILE)], "storage_options": {}}
    data["output"] = {"path": str(work / "output")}
    data["cache"] = {k: v for k, v in data.get("cache", {}).items() if k == "dedup"}
    compute = {k: v for k, v in data.get("compute", {}).items()
               if k not in ("actors", "min_actors", "max_actors", "deadline")}
    data["compute"] = {**compute, "actors": 1}
    data["cost"] = {k: v for k, v in data.get("cost", {}).items() if k != "max_cost_usd"}
    return PipelineSpec.model_validate(data)


def _run(spec: PipelineSpec, rows: int, address: str | None) -> Calibration:
    from pipelines.run import run

    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # its run's lines are progress; stdout is the estimate's
        summary = run(spec, address=address)
    seconds = time.monotonic() - started
    remember_short_speed(spec)
    remember_overhead(spec)  # pipelines/estimate/overhead.py
    usd = summary.cost.total_usd if summary.cost else 0.0
    return Calibration(rows=rows, seconds=seconds, usd=usd, output_tokens=summary.completion_tokens,
                       tokens_per_second=summary.completion_tokens / seconds if seconds else 0.0)


def remember_short_speed(spec: PipelineSpec) -> None:
    """A run keeps its engines' speed only when they were busy for MIN_BUSY_SECONDS (less is
    mostly start-up noise in a long run's figures), and a small sample on a fast engine can be
    done sooner. Then the sample's speed is its output tokens over its engine's working seconds
    (the ledger's useful time: its committed attempts), kept as that run's figure on its type."""
    from pipelines.engine import facts as engine_facts
    from pipelines.store.ledger import compute_ledger
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    if spec.routed:  # the ledger's tokens and seconds are every model's together: no one model's speed
        return
    store = OutputStore(spec.output.path)
    records = Records(store)
    run_id = next(iter(records.runs()), None)
    types = {a["instance_type"] for a in records.actors().values() if a.get("instance_type")}
    on = engine_facts.lookup(spec.model, spec.compute.gpus_per_actor).get("on", {})
    missing = [t for t in types if on.get(t, {}).get("run_id") != run_id or not on[t].get("tokens_per_second")]
    summary = compute_ledger(store).summary
    working = summary.breakdown_seconds.get("useful", 0.0)
    if not missing or run_id is None or working <= 0 or not summary.output_tokens:
        return
    speed = {t: {**on.get(t, {}), "tokens_per_second": summary.output_tokens / working, "engines": 1,
                 "run_id": run_id} for t in missing}
    engine_facts.remember(spec.model, spec.compute.gpus_per_actor, {"on": speed}, run_id)
