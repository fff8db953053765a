"""How far to trust `spotbatch estimate`: each set is estimated twice before it runs, once with
no history (the catalog's speed, an assumed output length) and once with `--calibrate N`, each
with its own empty engine-facts file; then it runs, and `spotbatch report --estimate` gives
each figure's error against the run. Everything goes through the CLI, as a user runs it.

    python -m jobs.bench.estimate_accuracy [--sets demo long_tail] [--rows 240] [--calibrate 48]

Prints a table of estimated against actual (prompt and output tokens, seconds, $) and one
JSON line. The issue's goals: calibrated time and $ within +/-25%, without history within 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

FIGURES = ("input_tokens", "output_tokens", "seconds", "usd")


def demo_set(rows: int, folder: Path) -> dict[str, Any]:
    """The demo's prompts and spec (jobs/demo.py), without enforce_eager: what a user writes."""
    from jobs.demo import sample_prompts, write_shards

    write_shards(sample_prompts(rows), folder)
    return {"input": {"paths": [str(folder)], "id_column": "id", "template": "{question}",
                      "system_prompt": "You are a concise assistant. Answer in one sentence."},
            "model": {"name": "smollm2-135m", "max_model_len": 1024},
            "sampling": {"max_tokens": 48, "temperature": 0.0}}


def long_tail_set(rows: int, folder: Path) -> dict[str, Any]:
    """The bench's long-tailed prompts, each row its own max_tokens."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.bench.prompt_sets import long_tail

    prompts = long_tail(rows)
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"id": list(range(rows)), "text": prompts.prompts, "max_tokens": prompts.max_tokens}),
                   folder / "part-0.parquet")
    return {"input": {"paths": [str(folder)], "prompt_column": "text", "max_tokens_column": "max_tokens"},
            "model": {"name": "smollm2-135m", "max_model_len": 2048},
            "sampling": {"max_tokens": 256, "temperature": 0.0}}


SETS = {"demo": demo_set, "long_tail": long_tail_set}


def cli(args: list[str], facts: Path, **kw: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPOTBATCH_FACTS": str(facts)}
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *args], env=env, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"spotbatch {' '.join(args)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def measure(name: str, rows: int, calibrate: int, work: Path) -> dict[str, Any]:
    spec = {**SETS[name](rows, work / "input"), "output": {"path": str(work / "output")}}
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    found: dict[str, Any] = {"set": name, "rows": rows, "calibrate": calibrate}
    for kind, extra in (("no_history", []), ("calibrated", ["--calibrate", str(calibrate)])):
        est = cli(["estimate", str(spec_path), "--json", *extra], work / f"facts-{kind}.json")
        (work / f"{kind}.json").write_text(est.stdout)
        found[f"{kind}_calibration"] = json.loads(est.stdout)["calibration"]
    cli(["run", str(spec_path)], work / "facts-run.json")
    for kind in ("no_history", "calibrated"):
        report = cli(["report", str(work / "output"), "--json", "--estimate", str(work / f"{kind}.json")],
                     work / "facts-run.json")
        found[kind] = json.loads(report.stdout)["estimate"]
    return found


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'set':<10} {'figure':<14} {'actual':>10} {'no history':>11} {'error':>7} {'calibrated':>11} "
             f"{'error':>7}"]
    for r in results:
        for figure in FIGURES:
            a, b = r["no_history"][figure], r["calibrated"][figure]
            lines.append(f"{r['set']:<10} {figure:<14} {a['actual']:>10,.4g} {_num(a['estimated']):>11} "
                         f"{_err(a['error']):>7} {_num(b['estimated']):>11} {_err(b['error']):>7}")
        cal = r["calibrated_calibration"]
        lines.append(f"{r['set']:<10} calibration: {cal['rows']} rows, {cal['seconds']:.0f} s, ${cal['usd']:.4f}")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4g}"


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0%}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", nargs="+", choices=list(SETS), default=["demo"])
    p.add_argument("--rows", type=int, default=240)
    p.add_argument("--calibrate", type=int, default=48, help="rows the calibrated estimate runs first")
    p.add_argument("--out", default="spotbatch-bench-estimate.json")
    p.add_argument("--keep", help="keep each set's folder (its estimates, engine facts and run) under this one")
    args = p.parse_args(argv)
    results = []
    for name in args.sets:
        print(f"bench: estimate: {name}, {args.rows} rows ...", flush=True)
        if args.keep:
            (Path(args.keep) / name).mkdir(parents=True)
            results.append(measure(name, args.rows, args.calibrate, Path(args.keep) / name))
            continue
        with tempfile.TemporaryDirectory(prefix=f"sb-bench-estimate-{name}-") as work:
            results.append(measure(name, args.rows, args.calibrate, Path(work)))
    print("\n".join(table(results)))
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
