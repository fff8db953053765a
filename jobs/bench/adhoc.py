"""`spotbatch bench --adhoc`: what someone tuning a prompt in a notebook waits for.

In one Python process, five batches of five prompts on one model, one after another, through
`pipelines.run.run` (warm engines kept between them, as in a notebook). Beside them, plain
vLLM in its own process: the time from its start to its first batch's results (start-up and
generate), then the same batches on its already loaded engine. Prints each batch's wall time,
the gaps to plain vLLM, and whether they meet the goals: the first batch within 2 s of plain
vLLM's start-up plus generate, every later one within 1.5 s of its warm generate.

    python -m jobs.bench.adhoc [--model smollm2-135m] [--batches 5] [--prompts 5] [--max-tokens 32]
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
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.bench.common import MAX_MODEL_LEN, SEED, chat_texts, cpu_env, engine_settings
from jobs.bench.prompt_sets import long_tail

FIRST_GOAL_SECONDS = 2.0  # the first batch, over plain vLLM's start-up plus generate
WARM_GOAL_SECONDS = 1.5  # every later batch, over plain vLLM's warm generate


def batches(n: int, size: int) -> list[list[str]]:
    prompts = long_tail(n * size).prompts
    return [prompts[i * size:(i + 1) * size] for i in range(n)]


def plain_vllm(model: str, dtype: str, eager: bool, work: list[list[str]], max_tokens: int) -> dict[str, Any]:
    """In a process of its own: `python -m jobs.bench.adhoc --plain ARGS.json`."""
    with tempfile.TemporaryDirectory(prefix="sb-adhoc-") as folder:
        args = Path(folder) / "plain.json"
        args.write_text(json.dumps({"model": model, "dtype": dtype, "eager": eager, "batches": work,
                                    "max_tokens": max_tokens}))
        launched = time.time()
        proc = subprocess.run([sys.executable, "-m", "jobs.bench.adhoc", "--plain", str(args)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"plain vLLM failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["first_batch_from_start"] = figures["first_result_at"] - launched
    return figures


def _plain_main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    os.environ.update(cpu_env())
    from vllm import LLM, SamplingParams

    llm = LLM(**engine_settings(data["model"], data["dtype"], data["eager"]))
    loaded_at = time.time()
    tokenizer = llm.get_tokenizer()
    params = SamplingParams(max_tokens=data["max_tokens"], temperature=0.0, seed=SEED)
    walls, first_result_at = [], None
    for batch in data["batches"]:
        began = time.time()
        llm.generate(chat_texts(tokenizer, batch, None), params, use_tqdm=False)
        walls.append(time.time() - began)
        first_result_at = first_result_at or time.time()
    print(json.dumps({"loaded_at": loaded_at, "first_result_at": first_result_at, "batch_seconds": walls}))


def spotbatch_batches(model: str, dtype: str, eager: bool, work: list[list[str]], max_tokens: int,
                      root: Path) -> list[dict[str, Any]]:
    """Each batch as a notebook cell would run it: a Parquet file, a spec, `run`."""
    from pipelines.run import release_engines, run
    from pipelines.spec import PipelineSpec

    figures = []
    try:
        for i, batch in enumerate(work):
            folder = root / f"batch-{i}"
            folder.mkdir(parents=True)
            pq.write_table(pa.table({"id": list(range(len(batch))), "prompt": batch}), folder / "in.parquet")
            spec = PipelineSpec.model_validate({
                "input": {"paths": str(folder / "in.parquet"), "prompt_column": "prompt"},
                "model": {"name": model, "dtype": dtype, "max_model_len": MAX_MODEL_LEN, "enforce_eager": eager},
                "sampling": {"max_tokens": max_tokens, "temperature": 0.0, "seed": SEED},
                "compute": {"actors": 1, "keep_warm_seconds": 300},
                "output": {"path": str(folder / "out")}})
            began = time.time()
            summary = run(spec, interactive=False)
            wall = time.time() - began
            if not summary.finished or summary.errors:
                raise RuntimeError(f"batch {i}: finished={summary.finished}, {summary.errors} errors")
            figures.append({"wall_seconds": wall, "rows": summary.rows, "completion_tokens": summary.completion_tokens})
            print(f"bench --adhoc: spotbatch batch {i + 1}: {wall:.2f} s", flush=True)
    finally:
        release_engines()
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="spotbatch bench --adhoc")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--prompts", type=int, default=5, help="prompts per batch")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--compiled", action="store_true", help="let vLLM compile (default eager)")
    p.add_argument("--out", default="spotbatch-bench-adhoc.json")
    p.add_argument("--plain", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.plain:
        _plain_main(args.plain)
        return {}
    from cluster.models import fetch
    from operators.engine import effective_dtype

    import torch

    model_path = str(fetch(args.model))
    dtype = effective_dtype("auto", on_cpu=not torch.cuda.is_available())
    work = batches(args.batches, args.prompts)
    eager = not args.compiled
    print(f"bench --adhoc: plain vLLM, {args.batches} batches of {args.prompts} prompts ...", flush=True)
    plain = plain_vllm(model_path, dtype, eager, work, args.max_tokens)
    print("bench --adhoc: spotbatch, the same batches in this process ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="sb-adhoc-") as root:
        ours = spotbatch_batches(model_path, dtype, eager, work, args.max_tokens, Path(root))
    rows = []
    for i, (mine, theirs) in enumerate(zip(ours, plain["batch_seconds"])):
        baseline = plain["first_batch_from_start"] if i == 0 else theirs
        goal = FIRST_GOAL_SECONDS if i == 0 else WARM_GOAL_SECONDS
        gap = mine["wall_seconds"] - baseline
        rows.append({"batch": i + 1, "spotbatch_seconds": mine["wall_seconds"], "plain_vllm_seconds": baseline,
                     "gap_seconds": gap, "goal_seconds": goal, "met": gap <= goal})
        what = "start-up + generate" if i == 0 else "warm generate"
        print(f"batch {i + 1}: spotbatch {mine['wall_seconds']:.2f} s, plain vLLM {what} {baseline:.2f} s: "
              f"gap {gap:+.2f} s (goal <= {goal} s: {'met' if gap <= goal else 'NOT met'})")
    figures = {"model": args.model, "dtype": dtype, "enforce_eager": eager, "prompts_per_batch": args.prompts,
               "max_tokens": args.max_tokens, "batches": rows, "plain_vllm": plain}
    Path(args.out).write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":  # vLLM starts workers with spawn
    main()
