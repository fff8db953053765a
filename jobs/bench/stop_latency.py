"""How long a run takes to end once it is asked to stop, with many units still to go: a run of
UNITS one-row units (tiny model) is cancelled (`spotbatch cancel`) after its first commits, and
the bench prints the seconds from the cancel to the process's exit, beside the time one unit
takes. The promise (docs/guide/failures.md): the run ends within about one unit's time
plus the commits in flight, whatever is left.

    python -m jobs.bench.stop_latency [--units 2000] [--code DIR]

`--code DIR` runs the spotbatch of another checkout (an older commit, say) with this same job,
to compare side by side. Starts a private local Ray of its own (cluster/local_ray.py, its state
in the bench's temp folder), torn down by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def job(work: Path, units: int) -> Path:
    pq.write_table(pa.table({"id": list(range(units)), "text": [f"prompt number {i}" for i in range(units)]}),
                   work / "in.parquet", row_group_size=64)
    spec = {"input": {"paths": str(work / "in.parquet"), "prompt_column": "text"},
            "model": {"name": "tiny-random", "max_model_len": 256, "enforce_eager": True},
            "sampling": {"max_tokens": 16},
            "compute": {"actors": 1, "tokens_per_unit": 20, "units_in_flight": 2},  # one row a unit
            "output": {"path": str(work / "out")}}
    (work / "spec.json").write_text(json.dumps(spec))
    return work / "spec.json"


def committed(output: Path) -> int:
    from pipelines.store.output import OutputStore

    return len(OutputStore(str(output)).committed_units())


def unit_seconds(output: Path) -> float:
    """The longest a committed unit took in the engine."""
    from pipelines.store.output import OutputStore
    from pipelines.store.record_types import AttemptOutcome, attempt_outcome
    from pipelines.store.records import Records

    ends = [t["end"] for tries in Records(OutputStore(str(output))).attempts().values() for t in tries.values()
            if attempt_outcome(t) is AttemptOutcome.COMMITTED]
    return max((e.get("engine_seconds", 0.0) for e in ends), default=0.0)


def measure(code: Path, units: int, address: str, work: Path) -> dict:
    spec = job(work, units)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": address, "PYTHONPATH": str(code)}
    log = open(work / "run.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", str(spec), "--address", address],
                            cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
    while committed(work / "out") < 5 and proc.poll() is None:
        time.sleep(0.2)
    cancelled_at = time.monotonic()
    subprocess.run([sys.executable, "-m", "jobs.cli", "cancel", str(work / "out")], cwd=code, env=env,
                   capture_output=True, check=True)
    code_ = proc.wait(3600)
    ended, ended_wall = time.monotonic(), time.time()
    if code_ != 4:  # not stopped as asked: the figure would not mean anything
        raise RuntimeError(f"the run exited {code_}, not 4:\n{(work / 'run.log').read_text()[-4000:]}")
    done = committed(work / "out")
    return {"exit": code_, "units": units, "committed": done, "seconds_to_first_commits": cancelled_at - started,
            "stop_to_exit_seconds": ended - cancelled_at,
            "stop_record_to_exit_seconds": ended_wall - stop_written(work / "out"),
            "longest_unit_seconds": unit_seconds(work / "out")}


def stop_written(output: Path) -> float:
    """When `spotbatch cancel` wrote the run's stop record (its own start-up is not the run's)."""
    from pipelines.store.output import STOP

    (record,) = (output / STOP).glob("*.json")
    return json.loads(record.read_text())["time"]


def main(argv: list[str] | None = None) -> None:
    from cluster import local_ray

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--units", type=int, default=2000, help="one-row units in the job (default 2000)")
    p.add_argument("--code", type=Path, default=ROOT, help="the spotbatch checkout to run (default: this one)")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="sb-stop-") as work:
        os.environ["SPOTBATCH_LOCAL_RAY"] = str(Path(work) / "local-ray.json")  # never the machine's own
        os.environ["PYTHONPATH"] = str(args.code.resolve())  # Ray's workers run that checkout's code too
        state, _ = local_ray.up()
        try:
            (Path(work) / "job").mkdir()
            result = measure(args.code.resolve(), args.units, state["address"], Path(work) / "job")
        finally:
            local_ray.down()
    print(f"stop latency ({args.code}): {result['units']} units, {result['committed']} committed when it ended; "
          f"{result['stop_to_exit_seconds']:.1f} s from the cancel command to the exit (exit {result['exit']}), "
          f"{result['stop_record_to_exit_seconds']:.1f} s from its stop record, "
          f"the longest unit {result['longest_unit_seconds']:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
