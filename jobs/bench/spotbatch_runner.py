"""spotbatch on the benchmark's prompts: a Parquet input, a spec, and `spotbatch run` in its
own process on a private local Ray, exactly as a user would start it. The engine's window and
busy time come from the run's own records (the feeder's figures in each attempt's end)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from jobs.bench.common import MAX_MODEL_LEN, SEED, RunnerResult
from jobs.bench.prompt_sets import PromptSet
from pipelines.store.output import OutputStore
from pipelines.store.records import Records


def write_input(prompts: PromptSet, folder: Path, shards: int = 4) -> Path:
    """The prompts as a few Parquet shards, as a dataset would come."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(prompts)
    for k in range(shards):
        lo, hi = k * n // shards, (k + 1) * n // shards
        pq.write_table(pa.table({"id": pa.array(range(lo, hi), pa.int64()),
                                 "prompt": prompts.prompts[lo:hi],
                                 "max_tokens": pa.array(prompts.max_tokens[lo:hi], pa.int64())}),
                       folder / f"part-{k:03d}.parquet")
    return folder


def spec_for(prompts: PromptSet, input_dir: Path, output: Path, model: str, dtype: str, enforce_eager: bool | None,
             units: int) -> dict:
    """`enforce_eager` None leaves it unset, as a user's spec does: the run decides."""
    # Units sized so the run has several: the harder case (unit boundaries, commits) that a
    # real dataset has, instead of one unit that is just one long generate.
    est_tokens = sum(len(p) for p in prompts.prompts) // 4 + len(prompts) * 40
    return {
        "input": {"paths": [str(input_dir)], "id_column": "id", "prompt_column": "prompt",
                  "max_tokens_column": "max_tokens", "system_prompt": prompts.system_prompt},
        "model": {"name": model, "dtype": dtype, "max_model_len": MAX_MODEL_LEN,
                  **({} if enforce_eager is None else {"enforce_eager": enforce_eager})},
        "sampling": {"max_tokens": max(prompts.max_tokens), "temperature": 0.0, "seed": SEED},
        "compute": {"actors": 1, "tokens_per_unit": max(1, est_tokens // units)},
        "output": {"path": str(output)},
    }


def run_spotbatch(prompts: PromptSet, work: Path, model: str, dtype: str, enforce_eager: bool | None,
                  units: int | None = None) -> tuple[RunnerResult, int]:
    """Returns the result and how many units the run had. Default: one per 160 prompts, so
    each unit holds more requests than the engine runs at once, as units of the default
    size (100k tokens) do; with 2 units in flight the engine is then never short of work."""
    units = units or max(2, len(prompts) // 160)
    input_dir = write_input(prompts, work / "input")
    output = work / "output"
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_for(prompts, input_dir, output, model, dtype, enforce_eager, units)))
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", str(spec_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"spotbatch run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = ds.dataset(str(output), format="parquet").to_table(
        columns=["prompt_tokens", "completion_tokens", "error"])
    errors = results.num_rows - results.column("error").null_count
    if errors:
        raise RuntimeError(f"spotbatch wrote {errors} error records; see {output}")
    ends = [(t["start"]["actor_id"], t["end"]) for tries in Records(OutputStore(str(output))).attempts().values()
            for t in tries.values() if "start" in t and "engine" in t.get("end", {})]
    latest: dict[str, dict] = {}  # per actor, its last snapshot (the figures are cumulative)
    for actor, end in ends:
        engine = end["engine"]
        finished = engine["last_finished_at"]
        if finished and finished >= latest.get(actor, {}).get("last_finished_at", 0):
            latest[actor] = engine
    # What its engines ran (the spec's word, or the run's choice), as each actor recorded it.
    compiled = {("eager" if a["compile"]["enforce_eager"] else "compiled")
                for a in Records(OutputStore(str(output))).actors().values() if a.get("compile")}
    busiest = max(latest.values(), key=lambda e: e["max_running"])
    kv = (f" (KV at most {busiest['max_kv_tokens']:,} of a {busiest['token_budget']:,}-token budget)"
          if busiest.get("token_budget") else "")
    first = min(e["first_added_at"] for e in latest.values())
    last = max(e["last_finished_at"] for e in latest.values())
    busy = sum(e["busy_seconds"] for e in latest.values())
    result = RunnerResult(
        runner="spotbatch",
        requests=results.num_rows,
        prompt_tokens=pc.sum(results.column("prompt_tokens")).as_py(),
        output_tokens=pc.sum(results.column("completion_tokens")).as_py(),
        first_request_at=first,
        last_result_at=last,
        busy_fraction=busy / (last - first) / len(latest) if last > first else None,
        notes=f"{len(ends)} units, 1 engine actor, at most {busiest['max_running']} requests in the engine at "
              f"once{kv}, {' and '.join(sorted(compiled)) or 'eager or compiled unrecorded'}",
    )
    return result, len(ends)
