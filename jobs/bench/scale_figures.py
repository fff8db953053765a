"""Every figure of the scale simulation (jobs/bench/scale.py's docstring says which), each step
in a fresh process (jobs/bench/scale_probes.py), on a local folder and, when asked, on the
loopback S3 behind a request counter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.bench.scale_cache import build_cache
from jobs.bench.steps import Steps


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


def in_fresh_process(probe: str, *args: Any) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "jobs.bench.scale", "--probe", probe, json.dumps(args)],
                          capture_output=True, text=True, env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"probe {probe}{tuple(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Sizes:
    """What the simulation measures, at which sizes (jobs/bench/scale.py's options)."""

    units: list[int]
    """Runs of these many one-row units, with `actors[0]` actors: plan, units, readers."""
    actors: list[int]
    """Fleets for the middle of `units`; the first runs every size."""
    cache_sizes: list[int]
    """Caches of these many answers: a unit's lookup, and a fold into a shard's run."""
    s3_units: list[int] = field(default_factory=list)
    """On the loopback S3: runs of these many units with `actors[0]` and each of `s3_actors`."""
    s3_actors: list[int] = field(default_factory=list)
    ray_data_units: list[int] | None = None
    """Ray Data's driver streaming these many descriptors (None: `units`)."""
    ray_data_baseline: bool = True
    """Also one block per unit, to compare with the blocks a run cuts."""


@dataclass(frozen=True)
class S3Target:
    """The loopback S3 the simulation also runs on, and the proxy that counts its requests."""

    storage_options: dict[str, Any]
    counter: Any  # jobs/bench/s3_requests.py's S3RequestCounter


@dataclass(frozen=True)
class Bench:
    """One simulation's work folder and step lines (`steps` prints one a step as it goes)."""

    work: Path
    steps: Steps

    def probe(self, what: str, name: str, *args: Any) -> dict[str, Any]:
        with self.steps(what):
            return in_fresh_process(name, *args)

    def made_input(self, n: int) -> str:
        with self.steps(f"input: {n:,} one-row units"):
            make_input(self.work / f"in-{n}", n)
        return str(self.work / f"in-{n}")


def scale_bench(sizes: Sizes, work: Path, s3: S3Target | None = None, steps: Steps | None = None) -> dict[str, Any]:
    """Every figure of jobs/bench/scale.py's docstring at `sizes`; on `s3` too when given."""
    bench = Bench(work, steps or Steps("scale"))
    out: dict[str, Any] = {"plan": [], "units": [], "actors": [], "readers": [], "s3": [], "ray_data": [], "cache": []}
    local_figures(bench, sizes, out)
    if s3 is not None and sizes.s3_units:
        s3_figures(bench, sizes, s3, out)
    for n in sizes.units if sizes.ray_data_units is None else sizes.ray_data_units:
        for one in (False, True) if sizes.ray_data_baseline else (False,):
            kind = "one block per unit" if one else "blocks as a run cuts them"
            out["ray_data"].append({**bench.probe(f"ray data: {n:,} units, {kind}", "ray_data", n,
                                                  2 * sizes.actors[0], one), "one_per_unit": one})
    for size in sizes.cache_sizes:
        with bench.steps(f"cache: build {size:,} answers"):
            build_cache(work / f"cache-{size}", size)
        path = str(work / f"cache-{size}")
        out["cache"].append({**bench.probe(f"cache: a unit's lookup in {size:,} answers", "cache", path, size),
                             **bench.probe(f"cache: a fold into a shard's run, {size:,} answers", "fold", path, size)})
    return out


def local_figures(bench: Bench, sizes: Sizes, out: dict[str, Any]) -> None:
    """Plan, units and readers at each of `sizes.units`, then each fleet on the middle size."""
    units, actors, work = sizes.units, sizes.actors, bench.work
    for n in units:
        folder = bench.made_input(n)
        output = tempfile.mkdtemp(prefix=f"out-{n}-", dir=work)
        out["plan"].append(bench.probe(f"plan: {n:,} units", "plan", folder, output, None))
        out["units"].append(bench.probe(f"units: {n:,} units, {actors[0]:,} actors", "units", folder, output, None,
                                        actors[0]))
        readers = {"units": n}
        for which in ("status", "ledger", "report"):
            r = bench.probe(f"{which}: {n:,} units' records", "reader", output, None, which)
            readers[f"{which}_seconds"], readers[f"{which}_peak_rss_mb"] = r["seconds"], r["peak_rss_mb"]
        out["readers"].append(readers)
    if units:
        middle = units[len(units) // 2]
        out["actors"].append(next(u for u in out["units"] if u["units"] == middle))
        for a in actors[1:]:
            out["actors"].append(bench.probe(f"units: {middle:,} units, {a:,} actors", "units",
                                             str(work / f"in-{middle}"),
                                             tempfile.mkdtemp(prefix=f"out-a{a}-", dir=work), None, a))


def s3_figures(bench: Bench, sizes: Sizes, s3: S3Target, out: dict[str, Any]) -> None:
    """Requests per unit on the loopback S3, counted on the wire and priced, and a fleet's beats."""
    from cluster.prices import request_prices, requests_usd
    from pipelines.store.records import beat_seconds

    prices = request_prices()
    # Every size with every fleet: the difference between two sizes is what a unit costs once
    # the fleet has started (each actor's first look at the output and the cache cancels out).
    for a in dict.fromkeys([sizes.actors[0], *sizes.s3_actors]):
        for n in sizes.s3_units:
            folder = bench.made_input(n)
            output = f"s3://spotbatch/scale-{time.time_ns()}/out"
            s3.counter.take()
            bench.probe(f"s3 plan: {n:,} units", "plan", folder, output, s3.storage_options)
            planned = s3.counter.take()
            run = bench.probe(f"s3 units: {n:,} units, {a:,} actors", "units", folder, output, s3.storage_options, a)
            requests = s3.counter.take()
            out["s3"].append({"units": n, "actors": a, "plan_requests": planned, "requests": requests,
                              "requests_per_unit": sum(requests.values()) / n, "failed": run["failed"],
                              "usd_per_1k_units": requests_usd(requests, prices) / n * 1000,
                              "unit_seconds_median": run["unit_seconds_median"]})
    out["s3_marginal"] = marginal_requests(out["s3"])
    out["s3_prices"] = prices
    # Beats are time, not units: a fleet writes BEATS_PER_SECOND at most, however large.
    out["beats"] = [{"actors": a, "beat_seconds": beat_seconds(a), "puts_per_second": a / beat_seconds(a),
                     "usd_per_hour": requests_usd({"PUT": a / beat_seconds(a) * 3600}, prices)}
                    for a in (10, 100, 1000)]


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

