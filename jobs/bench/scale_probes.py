"""What each fresh process of the scale simulation (jobs/bench/scale.py) runs: planning, the
units with simulated actors, the readers and Ray Data's driver (and the cache's, from
jobs/bench/scale_cache.py), each answering one JSON object of figures."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

import pyarrow as pa

from jobs.bench.scale_cache import peak_rss_mb, probe_cache, probe_fold


def scale_spec(input_dir: str, output: str, storage_options: dict | None = None):
    from pipelines.spec import PipelineSpec

    return PipelineSpec(input={"paths": input_dir, "prompt_column": "text"},
                        model={"name": "tiny-random"}, sampling={"max_tokens": 4},
                        compute={"tokens_per_unit": 1},  # one row per unit: all protocol, no work
                        output={"path": output, "storage_options": storage_options or {}})


def probe_plan(input_dir: str, output: str, storage_options: dict | None) -> dict[str, Any]:
    from pipelines.run import prepare

    started = time.monotonic()
    _, plan = prepare(scale_spec(input_dir, output, storage_options))
    return {"units": len(plan.units), "seconds": time.monotonic() - started, "peak_rss_mb": peak_rss_mb()}


def instant_generate(batch, cached=None) -> dict[str, list]:
    """The fake engine: each prompt answered at once (cached answers as they came)."""
    prompts, errors, keys = batch.prompts, batch.errors, batch.keys
    from operators.generate import empty_results
    from pipelines.store.counts import CACHE, ENGINE

    cols = empty_results(list(errors))
    for i, prompt in enumerate(prompts):
        if errors[i] is not None:
            continue
        answer = (cached or {}).get(keys[i]) if keys else None
        cols["served_from"][i] = CACHE if answer else ENGINE
        answer = answer or {"output": prompt[::-1], "prompt_tokens": len(prompt) // 4 + 1, "completion_tokens": 4,
                            "finish_reason": "length"}
        for c, v in answer.items():
            cols[c][i] = v
    return cols


def probe_units(input_dir: str, output: str, storage_options: dict | None, actors: int) -> dict[str, Any]:
    import queue
    import threading

    from pipelines.cache.response_cache import ResponseCache
    from pipelines.engine.actor import RUN_CACHE
    from pipelines.run import prepare
    from pipelines.store.records import Records, new_id
    from pipelines.stream.unit_rows import unit_rows
    from pipelines.unit.protocol import UnitContext, UnitProtocol

    spec = scale_spec(input_dir, output, storage_options)
    store, plan = prepare(spec)
    todo: queue.Queue = queue.Queue()
    for u in plan.units:
        todo.put(u.descriptor())
    run_id = new_id()
    Records(store).run_record(run_id, {"started_at": time.time(), "ended_at": None, "units_pending": len(plan.units)})
    per_unit: list[float] = []
    errors: list[str] = []

    def actor(n: int) -> None:
        actor_id = f"{run_id}-sim{n:04d}"
        context = UnitContext(spec, fingerprint=plan.fingerprint, run_id=run_id, actor_id=actor_id,
                              node_id=f"node-{n}")
        protocol = UnitProtocol(context, instant_generate, store=store,
                                cache=ResponseCache(f"{output.rstrip('/')}/{RUN_CACHE}", storage_options))
        Records(store).actor_started(actor_id, {
            "run_id": run_id, "pid": os.getpid(), "started_at": time.time(), "loaded_at": time.time(),
            "model": "tiny-random", "node_id": f"node-{n}", "instance_type": "sim", "market": "spot",
            "usd_per_hour": 1.0, "on_demand_usd_per_hour": 3.0, "share": 1.0, "price_source": "bench"})
        while True:
            try:
                unit = todo.get_nowait()
            except queue.Empty:
                return
            started = time.monotonic()
            try:
                outcome = protocol.run(unit["unit_id"], unit_rows(unit, spec))
                if not outcome.committed:
                    errors.append(f"{unit['unit_id']}: {outcome.skipped}")
            except Exception as err:
                errors.append(f"{unit['unit_id']}: {err!r}")
            per_unit.append(time.monotonic() - started)

    started = time.monotonic()
    threads = [threading.Thread(target=actor, args=(n,)) for n in range(actors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    Records(store).run_record(run_id, {"started_at": time.time() - wall, "ended_at": time.time(), "stopped": None})
    per_unit.sort()
    return {"units": len(plan.units), "actors": actors, "wall_seconds": wall, "units_per_second": len(per_unit) / wall,
            "unit_seconds_median": per_unit[len(per_unit) // 2], "errors": errors[:5], "failed": len(errors),
            "peak_rss_mb": peak_rss_mb()}


def probe_reader(output: str, storage_options: dict | None, which: str) -> dict[str, Any]:
    from pipelines.store.ledger import compute_ledger
    from pipelines.store.output import OutputStore
    from pipelines.store.status import run_status

    started = time.monotonic()
    if which == "status":
        status = run_status(output, storage_options)
        assert status.finished, "the simulated run did not finish"
    elif which == "ledger":
        compute_ledger(OutputStore(output, storage_options))
    else:
        from jobs.report import report

        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                report(output)
            finally:
                sys.stdout = stdout
    return {"seconds": time.monotonic() - started, "peak_rss_mb": peak_rss_mb()}


def probe_ray_data(units: int, slots: int, one_per_unit: bool) -> dict[str, Any]:
    import ray

    from pipelines.stream.ray_data import unit_dataset
    from pipelines.stream.unit_blocks import block_sizes

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _temp_dir=tempfile.mkdtemp(prefix="sb-ray-"))
    descriptors = [{"unit_id": f"{i:08d}", "path": "/nowhere/part-00000.parquet", "start": i, "stop": i + 1,
                    "model": "", "rows": 1, "version": "", "only_ids": b""} for i in range(units)]
    sizes = [1] * units if one_per_unit else block_sizes(units, slots)
    started = time.monotonic()
    ds = unit_dataset(descriptors, slots, sizes)
    seen = ds.map_batches(lambda b: pa.table({"n": [sum(len(x) for x in b.column("units").to_pylist())]}),
                          batch_size=1, batch_format="pyarrow")
    total = sum(r["n"] for r in seen.iter_rows())
    seconds = time.monotonic() - started
    ray.shutdown()
    assert total == units, (total, units)
    return {"units": units, "blocks": len(sizes), "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


PROBES = {"plan": probe_plan, "units": probe_units, "reader": probe_reader, "ray_data": probe_ray_data,
          "cache": probe_cache, "fold": probe_fold}
