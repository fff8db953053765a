"""`spotbatch bench --scale`: what grows as a run grows, with a fake engine that answers at once
(the engine is not what is measured here; `spotbatch bench` measures it).

Real planning, the real read stage, unit protocol, response cache and records, on real storage:
a local folder, and with --s3 the loopback S3 (moto_server) behind a proxy that counts every
request by how S3 prices it. Each figure comes from a fresh process (its peak RSS is its own):
  plan      driver seconds and peak memory to plan N units
  units     seconds per unit, and S3 requests per unit, with A simulated actors (threads, each
            its own protocol and cache reader) taking units from one queue
  readers   seconds and peak memory of `status`, the ledger and `report` over N units' records
  ray_data  Ray Data's driver: blocks, seconds and peak memory to stream N unit descriptors as a
            run cuts them (pipelines/stream/unit_blocks.py), against one block per unit
  cache     one unit's lookup (100 hits, 100 misses) against caches of 10k .. 10M answers, and
            one fold of new answers into a shard's run (compaction's largest step)
Prints a line per step as it goes (its size, then its seconds), then each figure with its
growth across the sizes, and ends with the JSON line. Without options the sizes are small (a
few minutes); --full takes the docs' (docs/guide/scaling.md; hours: SIZES and FULL_TAKES below).

    python -m jobs.bench.scale [--full] [--units 300,1000] [--actors 10,30]
                               [--cache-sizes 10000,100000] [--s3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.bench.steps import Steps

LOOKUP_HITS = LOOKUP_MISSES = 100  # one unit's keys


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- what each fresh process runs ------------------------------------------------------------
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


def probe_cache(path: str, size: int) -> dict[str, Any]:
    """A unit's lookup against a compacted cache of `size` answers: cold (a fresh reader) and
    warm (its row-group key ranges kept), with the files it opened."""
    from pipelines.cache.response_cache import CacheFiles, ResponseCache

    keys = pq.read_table(f"{path}/probe_keys.parquet").column(0).to_pylist()
    opened: list[str] = []
    real_open = CacheFiles.open
    CacheFiles.open = lambda self, p: opened.append(p) or real_open(self, p)
    cache = ResponseCache(path, compact_after=None)
    figures: dict[str, Any] = {}
    per_lookup = LOOKUP_HITS + LOOKUP_MISSES
    for label, batch in (("cold", keys[:per_lookup]), ("warm", keys[per_lookup:])):
        opened.clear()
        started = time.monotonic()
        found = cache.lookup(batch)
        figures[f"{label}_seconds"] = time.monotonic() - started
        figures[f"{label}_files_opened"] = len(opened)
        assert len(found) == LOOKUP_HITS, (label, len(found))
    return {"answers": size, **figures, "keys_in_memory": cache.memory_keys(), "footer_bytes": cache.footer_bytes(),
            "peak_rss_mb": peak_rss_mb(), "rss_trimmed_mb": rss_trimmed_mb()}


def probe_fold(path: str, size: int) -> dict[str, Any]:
    """One fold of MAX_FILE_ROWS new answers into shard 00's run, on a copy of the shard (the
    cache stays as built): its seconds, and its peak memory (Arrow's, in a fresh process)."""
    import shutil

    import numpy as np

    from pipelines.cache import runs as cache_runs
    from pipelines.cache.compaction import fold_into_run
    from pipelines.cache.response_cache import MAX_FILE_ROWS, SHARDS, CacheFiles, answer_table

    work = Path(tempfile.mkdtemp(prefix="fold-", dir=Path(path).parent))
    try:
        shutil.copytree(Path(path) / SHARDS / "00", work / SHARDS / "00")
        run_before = len(cache_runs.by_shard(CacheFiles(str(work)).parquet_files(SHARDS)).get("00", []))
        tail = np.frombuffer(b"0123456789abcdef", np.uint8)[np.random.default_rng(7).integers(
            0, 16, size=(MAX_FILE_ROWS, 62))].tobytes()
        keys = sorted("00" + tail[i * 62:(i + 1) * 62].decode() for i in range(MAX_FILE_ROWS))
        table = answer_table(keys, {"output": ["a new answer"] * len(keys), "prompt_tokens": [20] * len(keys),
                                    "completion_tokens": [6] * len(keys), "finish_reason": ["stop"] * len(keys)})
        before = peak_rss_mb()
        started = time.monotonic()
        written = fold_into_run(CacheFiles(str(work)), "00", table)
        seconds = time.monotonic() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Arrow's own peak is what the fold held; RSS also keeps what the allocator was handed back
    return {"answers": size, "fold_answers": len(keys), "fold_seconds": seconds, "run_files_before": run_before,
            "run_files_after": written, "fold_added_peak_mb": peak_rss_mb() - before,
            "fold_arrow_peak_mb": pa.default_memory_pool().max_memory() / 1e6}


def rss_trimmed_mb() -> float | None:
    """This process's RSS once glibc has handed its freed memory back: what it still holds
    (a peak counts memory freed but kept by the allocator's per-thread arenas)."""
    import ctypes

    import psutil

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return None
    return psutil.Process().memory_info().rss / 1e6


def build_cache(path: Path, size: int) -> None:
    """A compacted cache of `size` synthetic answers, laid out as compaction lays it out (a
    shard's answers in one small file below MAX_FILE_ROWS, in its run above; not the few small
    files a live shard also has, MERGE_FANIN - 1 a size class at most), and the keys a probe
    looks up (half in the cache, half not)."""
    import numpy as np

    from pipelines.cache.compaction import write_shard_files
    from pipelines.cache.response_cache import CacheFiles, answer_table

    if (path / "probe_keys.parquet").exists():
        return
    rng = np.random.default_rng(size)
    hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
    files = CacheFiles(str(path))
    shards = 16 ** 2
    hits: list[str] = []
    for s in range(shards):
        n = size // shards + (1 if s < size % shards else 0)
        tail = hexdigits[rng.integers(0, 16, size=(n, 62))].tobytes()
        keys = sorted(f"{s:02x}" + tail[i * 62:(i + 1) * 62].decode() for i in range(n))
        write_shard_files(files, f"{s:02x}", f"{0:020d}-synthetic", answer_table(keys, {
            "output": ["an answer of a few words"] * n, "prompt_tokens": [20] * n, "completion_tokens": [6] * n,
            "finish_reason": ["stop"] * n}))
        hits.extend(keys[:: max(1, n // 2)][:2])
    picked = [hits[i] for i in rng.choice(len(hits), 2 * LOOKUP_HITS, replace=False)]
    misses = ["".join(rng.choice(list("0123456789abcdef"), 64)) for _ in range(2 * LOOKUP_MISSES)]
    probe = picked[:LOOKUP_HITS] + misses[:LOOKUP_MISSES] + picked[LOOKUP_HITS:] + misses[LOOKUP_MISSES:]
    pq.write_table(pa.table({"key": probe}), path / "probe_keys.parquet")


def make_input(folder: Path, units: int) -> None:
    """`units` one-row units in shards of at most 10,000 rows."""
    if (folder / "_DONE").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    per = 10_000
    for s, start in enumerate(range(0, units, per)):
        ids = list(range(start, min(units, start + per)))
        pq.write_table(pa.table({"id": ids, "text": [f"prompt {i}" for i in ids]}), folder / f"part-{s:05d}.parquet")
    (folder / "_DONE").write_text("")


PROBES = {"plan": probe_plan, "units": probe_units, "reader": probe_reader, "ray_data": probe_ray_data,
          "cache": probe_cache, "fold": probe_fold}


def in_fresh_process(probe: str, *args: Any) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "jobs.bench.scale", "--probe", probe, json.dumps(args)],
                          capture_output=True, text=True, env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"probe {probe}{tuple(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth(figures: list[dict[str, Any]], key: str, by: str) -> str:
    """'x1.10 from 1,000 to 100,000 units'-style growth of `key` between the first and last."""
    first, last = figures[0], figures[-1]
    if not first[key]:
        return "n/a"
    return f"x{last[key] / first[key]:.2f} from {first[by]:,} to {last[by]:,}"


def scale_bench(units: list[int], actors: list[int], cache_sizes: list[int], work: Path,
                s3: dict | None = None, s3_units: list[int] | None = None, s3_actors: list[int] | None = None,
                ray_data_units: list[int] | None = None, ray_data_baseline: bool = True,
                counter=None, steps: Steps | None = None) -> dict[str, Any]:
    """Every figure of the module's docstring; `s3`: storage options of an S3 endpoint behind
    `counter` (an S3RequestCounter), for runs of each of `s3_units` units with `actors[0]` and each
    of `s3_actors` actors. Each step prints a line as it goes (`steps`)."""
    from cluster.prices import request_prices, requests_usd
    from pipelines.store.records import beat_seconds

    steps = steps or Steps("scale")

    def probe(what: str, name: str, *args: Any) -> dict[str, Any]:
        with steps(what):
            return in_fresh_process(name, *args)

    def made_input(n: int) -> str:
        with steps(f"input: {n:,} one-row units"):
            make_input(work / f"in-{n}", n)
        return str(work / f"in-{n}")

    prices = request_prices()
    out: dict[str, Any] = {"plan": [], "units": [], "actors": [], "readers": [], "s3": [], "ray_data": [], "cache": []}
    middle = units[len(units) // 2] if units else None
    for n in units:
        folder = made_input(n)
        output = tempfile.mkdtemp(prefix=f"out-{n}-", dir=work)
        out["plan"].append(probe(f"plan: {n:,} units", "plan", folder, output, None))
        out["units"].append(probe(f"units: {n:,} units, {actors[0]:,} actors", "units", folder, output, None,
                                  actors[0]))
        readers = {"units": n}
        for which in ("status", "ledger", "report"):
            r = probe(f"{which}: {n:,} units' records", "reader", output, None, which)
            readers[f"{which}_seconds"], readers[f"{which}_peak_rss_mb"] = r["seconds"], r["peak_rss_mb"]
        out["readers"].append(readers)
    if units:
        out["actors"].append(next(u for u in out["units"] if u["units"] == middle))
        for a in actors[1:]:
            out["actors"].append(probe(f"units: {middle:,} units, {a:,} actors", "units", str(work / f"in-{middle}"),
                                       tempfile.mkdtemp(prefix=f"out-a{a}-", dir=work), None, a))
    # Every size with every fleet: the difference between two sizes is what a unit costs once
    # the fleet has started (each actor's first look at the output and the cache cancels out).
    s3_runs = [(n, a) for a in dict.fromkeys([actors[0], *(s3_actors or [])]) for n in s3_units or []]
    for n, a in s3_runs:
        folder = made_input(n)
        output = f"s3://spotbatch/scale-{time.time_ns()}/out"
        counter.take()
        probe(f"s3 plan: {n:,} units", "plan", folder, output, s3)
        planned = counter.take()
        run = probe(f"s3 units: {n:,} units, {a:,} actors", "units", folder, output, s3, a)
        requests = counter.take()
        out["s3"].append({"units": n, "actors": a, "plan_requests": planned, "requests": requests,
                          "requests_per_unit": sum(requests.values()) / n, "failed": run["failed"],
                          "usd_per_1k_units": requests_usd(requests, prices) / n * 1000,
                          "unit_seconds_median": run["unit_seconds_median"]})
    if s3_runs:
        out["s3_marginal"] = marginal_requests(out["s3"])
        out["s3_prices"] = prices
        # Beats are time, not units: a fleet writes BEATS_PER_SECOND at most, however large.
        out["beats"] = [{"actors": a, "beat_seconds": beat_seconds(a), "puts_per_second": a / beat_seconds(a),
                         "usd_per_hour": requests_usd({"PUT": a / beat_seconds(a) * 3600}, prices)}
                        for a in (10, 100, 1000)]
    for n in units if ray_data_units is None else ray_data_units:
        for one in (False, True) if ray_data_baseline else (False,):
            kind = "one block per unit" if one else "blocks as a run cuts them"
            out["ray_data"].append({**probe(f"ray data: {n:,} units, {kind}", "ray_data", n, 2 * actors[0], one),
                                    "one_per_unit": one})
    for size in cache_sizes:
        with steps(f"cache: build {size:,} answers"):
            build_cache(work / f"cache-{size}", size)
        path = str(work / f"cache-{size}")
        out["cache"].append({**probe(f"cache: a unit's lookup in {size:,} answers", "cache", path, size),
                             **probe(f"cache: a fold into a shard's run, {size:,} answers", "fold", path, size)})
    return out


def marginal_requests(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fleet size, the requests a unit adds once the fleet has started: the difference
    between its largest and smallest run, per unit of difference."""
    out = []
    for a in dict.fromkeys(r["actors"] for r in runs):
        mine = sorted((r for r in runs if r["actors"] == a), key=lambda r: r["units"])
        if len(mine) > 1 and mine[-1]["units"] > mine[0]["units"]:
            first, last = mine[0], mine[-1]
            added = sum(last["requests"].values()) - sum(first["requests"].values())
            out.append({"actors": a, "from_units": first["units"], "to_units": last["units"],
                        "requests_per_unit": added / (last["units"] - first["units"]),
                        "fleet_start_requests": sum(first["requests"].values())
                        - added / (last["units"] - first["units"]) * first["units"]})
    return out


def report_lines(f: dict[str, Any]) -> list[str]:
    lines = []
    for p in f["plan"]:
        lines.append(f"plan     {p['units']:>9,} units: {p['seconds']:6.2f} s, peak RSS {p['peak_rss_mb']:6.0f} MB")
    if len(f["plan"]) > 1:
        lines.append(f"         plan time {growth(f['plan'], 'seconds', 'units')} units; "
                     f"peak RSS {growth(f['plan'], 'peak_rss_mb', 'units')}")
    for u in f["units"] + f["actors"][1:]:
        lines.append(f"units    {u['units']:>9,} units, {u['actors']:>5,} actors: "
                     f"{u['unit_seconds_median'] * 1000:7.1f} ms per unit (median), "
                     f"{u['units_per_second']:7.1f} units/s, {u['failed']} not committed")
    if len(f["units"]) > 1:
        lines.append(f"         ms per unit {growth(f['units'], 'unit_seconds_median', 'units')} units")
    if len(f["actors"]) > 1:
        lines.append(f"         ms per unit {growth(f['actors'], 'unit_seconds_median', 'actors')} actors "
                     f"(threads of one process: the GIL, not storage, is most of it)")
    for r in f["readers"]:
        lines.append(f"readers  {r['units']:>9,} units: status {r['status_seconds']:6.2f} s "
                     f"({r['status_peak_rss_mb']:.0f} MB), ledger {r['ledger_seconds']:6.2f} s "
                     f"({r['ledger_peak_rss_mb']:.0f} MB), report {r['report_seconds']:6.2f} s "
                     f"({r['report_peak_rss_mb']:.0f} MB)")
    if len(f["readers"]) > 1:
        for which in ("status", "ledger", "report"):
            lines.append(f"         {which} time {growth(f['readers'], which + '_seconds', 'units')} units; "
                         f"peak RSS {growth(f['readers'], which + '_peak_rss_mb', 'units')}")
    for s in f["s3"]:
        by_class = ", ".join(f"{k} {v / s['units']:.2f}" for k, v in sorted(s["requests"].items()))
        lines.append(f"s3       {s['units']:>9,} units, {s['actors']:>5,} actors: {s['requests_per_unit']:.1f} "
                     f"requests per unit ({by_class}): ${s['usd_per_1k_units']:.4f} per 1,000 units")
    for b in f.get("beats", []):
        lines.append(f"beats    {b['actors']:>5,} actors beat every {b['beat_seconds']:.0f} s: "
                     f"{b['puts_per_second']:.0f} PUT/s, ${b['usd_per_hour']:.3f} per hour")
    if f.get("s3_prices"):
        lines.append(f"         S3 prices: {f['s3_prices']['source']}, as of {f['s3_prices']['as_of']}")
    by_units = [s for s in f["s3"] if s["actors"] == f["s3"][0]["actors"]] if f["s3"] else []
    if len(by_units) > 1:
        lines.append(f"         requests per unit {growth(by_units, 'requests_per_unit', 'units')} units")
    by_actors = [s for s in f["s3"] if s["units"] == f["s3"][0]["units"]]
    if len(by_actors) > 1:
        lines.append(f"         requests per unit {growth(by_actors, 'requests_per_unit', 'actors')} actors")
    for m in f.get("s3_marginal", []):
        # below zero, the smaller run had not reached a steady state (each actor held a unit or two)
        start = f"{m['fleet_start_requests']:,.0f}" if m["fleet_start_requests"] >= 0 else "n/a"
        lines.append(f"s3 unit  {m['actors']:>5,} actors: {m['requests_per_unit']:.1f} requests per unit once the "
                     f"fleet has started ({m['from_units']:,} to {m['to_units']:,} units), and {start} for the "
                     f"fleet's start")
    if len(f.get("s3_marginal", [])) > 1:
        started = growth(f["s3_marginal"], "requests_per_unit", "actors")
        lines.append(f"         requests per unit once started {started} actors")
    for r in f["ray_data"]:
        kind = "one block per unit" if r["one_per_unit"] else "blocks as a run cuts them"
        lines.append(f"ray data {r['units']:>9,} units, {kind:26}: {r['blocks']:>7,} blocks, "
                     f"{r['seconds']:6.1f} s, driver peak RSS {r['peak_rss_mb']:5.0f} MB")
    cut = [r for r in f["ray_data"] if not r["one_per_unit"]]
    if len(cut) > 1:
        lines.append(f"         blocks {growth(cut, 'blocks', 'units')} units; driver seconds "
                     f"{growth(cut, 'seconds', 'units')}")
    for c in f["cache"]:
        lines.append(f"cache    {c['answers']:>11,} answers: a unit's lookup cold {c['cold_seconds'] * 1000:6.1f} ms "
                     f"({c['cold_files_opened']} files), warm {c['warm_seconds'] * 1000:6.1f} ms "
                     f"({c['warm_files_opened']} files); keys in memory {c['keys_in_memory']}, footers kept "
                     f"{c.get('footer_bytes', 0) / 1e6:.1f} MB, peak RSS {c['peak_rss_mb']:.0f} MB "
                     f"({c.get('rss_trimmed_mb') or 0:.0f} MB held after the lookups)")
        lines.append(f"         a fold of {c['fold_answers']:,} answers into a shard's run of "
                     f"{c['run_files_before']} files: {c['fold_seconds']:.2f} s, {c['run_files_after']} files written, "
                     "Arrow's peak "
                     f"{c['fold_arrow_peak_mb']:.0f} MB (RSS +{c['fold_added_peak_mb']:.0f} MB)")
    if len(f["cache"]) > 1:
        held = growth(f["cache"], "rss_trimmed_mb", "answers") if f["cache"][0].get("rss_trimmed_mb") else "n/a"
        lines.append(f"         warm lookup {growth(f['cache'], 'warm_seconds', 'answers')} answers; "
                     f"peak RSS {growth(f['cache'], 'peak_rss_mb', 'answers')}; held {held}")
    return lines


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


# A run without options measures every figure at sizes that finish in a few minutes on a
# 2-core machine; --full takes the sizes the docs' figures come from.
SIZES = {
    "small": {"units": [300, 1000], "actors": [10, 30], "cache_sizes": [10_000, 100_000],
              "s3_units": [100, 300], "s3_actors": [30]},
    "full": {"units": [1000, 10_000, 100_000], "actors": [10, 100, 1000],
             "cache_sizes": [10_000, 1_000_000, 10_000_000], "s3_units": [1000, 2000], "s3_actors": [100]},
}
# Estimated, not timed as one run: the sum of its steps' times measured one by one (docs/guide/scaling.md, "How
# it scales"): the 100k-unit run 87 min, 100 and 1,000 actors on 10k units 55 min, Ray Data's one
# block per unit at 100k units about 30 min, the readers and the 10M-answer cache the rest.
FULL_TAKES = "about 3 hours on a 2-core machine, estimated from its steps measured one by one; more with --s3"


def sizes_args(parser: argparse.ArgumentParser) -> None:
    small = SIZES["small"]
    parser.add_argument("--full", action="store_true",
                        help="the sizes of docs/guide/scaling.md "
                             f"({', '.join(f'{k} {v}' for k, v in SIZES['full'].items())}): "
                             f"{FULL_TAKES}. Without it: {', '.join(f'{k} {v}' for k, v in small.items())}, "
                             "a few minutes")
    parser.add_argument("--units", type=_ints, help=f"default {small['units']}")
    parser.add_argument("--actors", type=_ints, help=f"default {small['actors']}")
    parser.add_argument("--cache-sizes", type=_ints, help=f"default {small['cache_sizes']}")
    parser.add_argument("--ray-data-units", type=_ints, default=None, help="default: --units")
    parser.add_argument("--s3", action="store_true", help="also on the loopback S3 (moto_server), requests counted")
    parser.add_argument("--s3-units", type=_ints, help=f"default {small['s3_units']}")
    parser.add_argument("--s3-actors", type=_ints, help=f"default {small['s3_actors']}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spotbatch bench --scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes_args(parser)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spotbatch-bench-scale")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("probe_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in SIZES["full" if args.full else "small"].items():
        if getattr(args, name) is None:  # an option given outright wins over either set of sizes
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse(argv)
    if args.probe:
        print(json.dumps(PROBES[args.probe](*json.loads(args.probe_args))))
        return None
    args.work.mkdir(parents=True, exist_ok=True)
    steps = Steps("scale")
    print(f"scale: units {args.units}, actors {args.actors}, cache sizes {args.cache_sizes}"
          + (f", S3 units {args.s3_units} with actors {args.s3_actors}" if args.s3 else "")
          + ("" if args.full else f"; --full for the sizes of docs/guide/scaling.md: {FULL_TAKES}"), flush=True)
    if args.s3:
        from jobs.bench.s3_requests import S3RequestCounter, moto_server, storage_options

        with moto_server() as endpoint, S3RequestCounter(endpoint) as counter:
            options = storage_options(counter.endpoint)
            figures = scale_bench(args.units, args.actors, args.cache_sizes, args.work, options, args.s3_units,
                                  args.s3_actors, args.ray_data_units, counter=counter, steps=steps)
    else:
        figures = scale_bench(args.units, args.actors, args.cache_sizes, args.work,
                              ray_data_units=args.ray_data_units, steps=steps)
    print(f"scale: {steps.done} steps in {steps.total_seconds():.0f} s", flush=True)
    for line in report_lines(figures):
        print(line)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
