"""Where a private Ray's start goes: the wall time of each step `ray.init` takes one after
another, and the CPU each process it starts has used once it is up. Why a batch that must
start Ray pays for it (docs/guide/notebooks.md).

    python -m jobs.bench.ray_start [--rounds 3] [--settle 6]

Each round starts Ray as a run does (cluster/session.py: its own temp dir, no dashboard, all
cores), waits `--settle` seconds for what it starts after `ray.init` returns, prints the
figures and shuts it down.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

STEPS = ("start_gcs_server", "start_api_server", "start_raylet")  # ray._private.node.Node's


def one_round(settle: float) -> dict[str, Any]:
    import psutil
    import ray
    from ray._private import node, worker

    from cluster.local_ray import OBJECT_STORE_BYTES

    began = time.time()
    steps: dict[str, list[float]] = {}

    def timed(owner, name):
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                steps[name] = [round(start - began, 2), round(time.time() - began, 2)]
        setattr(owner, name, wrapper)
        return original

    originals = {name: timed(node.Node, name) for name in STEPS}
    connect = timed(worker, "connect")
    temp_dir = tempfile.mkdtemp(prefix="sb-ray-start-", dir="/tmp")
    try:
        ray.init(address="local", _temp_dir=temp_dir, include_dashboard=False, num_cpus=os.cpu_count(),
                 object_store_memory=OBJECT_STORE_BYTES)
        ready = time.time() - began
        time.sleep(settle)
        processes = {}
        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                name = child.name() if child.name().startswith("ray::") else os.path.basename(
                    next((a for a in child.cmdline() if a.endswith((".py", "server", "raylet"))), child.name()))
                processes[name] = round(processes.get(name, 0.0) + times.user + times.system, 2)
            except psutil.Error:
                pass
        mine = psutil.Process().cpu_times()
        return {"init_seconds": round(ready, 2), "steps": steps, "cpu_seconds": processes,
                "cpu_seconds_total": round(sum(processes.values()), 2),
                "driver_cpu_seconds": round(mine.user + mine.system, 2)}
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for name, original in originals.items():
            setattr(node.Node, name, original)
        worker.connect = connect


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.bench.ray_start")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settle", type=float, default=6.0, help="seconds after ray.init before the CPU is read")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_round(args.settle)))
        return
    import subprocess

    for n in range(args.rounds):  # each in a fresh process: the driver's own imports count once, as a run's do
        out = subprocess.run([sys.executable, "-m", "jobs.bench.ray_start", "--one", "--settle", str(args.settle)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        steps = ", ".join(f"{k.removeprefix('start_')} {a:.2f}-{b:.2f} s" for k, (a, b) in r["steps"].items())
        print(f"round {n + 1}: ray.init {r['init_seconds']:.2f} s ({steps}); CPU: Ray's processes "
              f"{r['cpu_seconds_total']:.2f} s, the driver {r['driver_cpu_seconds']:.2f} s "
              f"(with its imports), on {os.cpu_count()} cores")
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpu_seconds"].items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
