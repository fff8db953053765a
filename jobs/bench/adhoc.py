"""`spotbatch bench --adhoc`: what someone tuning a prompt in a notebook waits for.

In one Python process, five batches of five prompts on one model, one after another, through
`pipelines.run.run` (warm engines kept between them, as in a notebook). Beside them, plain
vLLM in its own process: the time from its start to its first batch's results (start-up and
generate), then the same batches on its already loaded engine. Prints each batch's wall time,
the gaps to plain vLLM, and whether they meet the goals: the first batch within 2 s of plain
vLLM's start-up plus generate, every later one within 1.5 s of its warm generate.

The first batch is timed three times, the engine cold each time: in a process with no Ray yet
(spotbatch starts a local one, as in a notebook with no `ray.init()` cell); again in that
process once the engines are released, with its Ray up (a notebook that called `ray.init()`);
and in a fresh process, timed from its launch as plain vLLM's is, that joins a Ray kept by
`spotbatch up` (as every CLI run on a machine that keeps one, or a job on a running cluster).

    python -m jobs.bench.adhoc [--model smollm2-135m] [--batches 5] [--prompts 5] [--max-tokens 32]
                               [--compile default|eager|compiled]
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

from jobs.bench.common import COMPILE_MODES, MAX_MODEL_LEN, SEED, chat_texts, compile_for, cpu_env, engine_settings
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


def spotbatch_batches(model: str, dtype: str, eager: bool | None, work: list[list[str]], max_tokens: int,
                      root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each batch as a notebook cell would run it: a Parquet file, a spec, `run`. Returns the
    batches, then the first batch again on new engines with Ray already up."""
    from pipelines.run import release_engines

    figures = []
    try:
        for i, batch in enumerate(work):
            figures.append(_one_batch(root / f"batch-{i}", model, dtype, eager, batch, max_tokens))
            print(f"bench --adhoc: spotbatch batch {i + 1}: {figures[-1]['wall_seconds']:.2f} s", flush=True)
        release_engines()
        again = _one_batch(root / "batch-0-ray-up", model, dtype, eager, work[0], max_tokens)
        print(f"bench --adhoc: spotbatch batch 1 again, Ray up, new engines: {again['wall_seconds']:.2f} s", flush=True)
    finally:
        release_engines()
    return figures, again


def kept_ray_batch(root: Path, model: str, dtype: str, eager: bool | None, batch: list[str],
                   max_tokens: int) -> dict[str, Any]:
    """The first batch in a fresh process that joins a local Ray kept by `spotbatch up` (a
    private one here, never the machine's own), timed from the process's launch."""
    from cluster import local_ray

    before = os.environ.get("SPOTBATCH_LOCAL_RAY")
    os.environ["SPOTBATCH_LOCAL_RAY"] = str(root / "local-ray.json")  # the child inherits it
    local_ray.up()
    try:
        args = root / "one-batch.json"
        args.write_text(json.dumps({"folder": str(root / "batch-0-kept-ray"), "model": model, "dtype": dtype,
                                    "eager": eager, "batch": batch, "max_tokens": max_tokens}))
        launched = time.time()
        proc = subprocess.run([sys.executable, "-m", "jobs.bench.adhoc", "--one-batch", str(args)],
                              capture_output=True, text=True)
    finally:
        local_ray.down()
        os.environ.pop("SPOTBATCH_LOCAL_RAY")
        if before is not None:
            os.environ["SPOTBATCH_LOCAL_RAY"] = before
    if proc.returncode != 0:
        raise RuntimeError(f"the batch in a fresh process failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    figures = json.loads((root / "one-batch-figures.json").read_text())
    figures["wall_seconds"] = figures["finished_at"] - launched
    print(f"bench --adhoc: spotbatch batch 1 in a fresh process, joining a kept Ray: {figures['wall_seconds']:.2f} s",
          flush=True)
    return figures


def _one_batch(folder: Path, model: str, dtype: str, eager: bool | None, batch: list[str],
               max_tokens: int) -> dict[str, Any]:
    from pipelines.run import run
    from pipelines.spec import PipelineSpec
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    folder.mkdir(parents=True)
    pq.write_table(pa.table({"id": list(range(len(batch))), "prompt": batch}), folder / "in.parquet")
    spec = PipelineSpec.model_validate({
        "input": {"paths": str(folder / "in.parquet"), "prompt_column": "prompt"},
        "model": {"name": model, "dtype": dtype, "max_model_len": MAX_MODEL_LEN,
                  **({} if eager is None else {"enforce_eager": eager})},
        "sampling": {"max_tokens": max_tokens, "temperature": 0.0, "seed": SEED},
        "compute": {"actors": 1, "keep_warm_seconds": 300},
        "output": {"path": str(folder / "out")}})
    began = time.time()
    summary = run(spec, interactive=False)
    wall = time.time() - began
    if not summary.finished or summary.errors:
        raise RuntimeError(f"{folder.name}: finished={summary.finished}, {summary.errors} errors")
    compiled = [a["compile"] for a in Records(OutputStore(str(folder / "out"))).actors().values() if a.get("compile")]
    return {"wall_seconds": wall, "rows": summary.rows, "completion_tokens": summary.completion_tokens,
            "startup": summary.startup, "compile": compiled[0] if compiled else None}


def _row(batch: int, mine: dict[str, Any], baseline: float, first: bool, label: str = "") -> dict[str, Any]:
    goal = FIRST_GOAL_SECONDS if first else WARM_GOAL_SECONDS
    gap = mine["wall_seconds"] - baseline
    what = "start-up + generate" if first else "warm generate"
    print(f"batch {batch}{label}: spotbatch {mine['wall_seconds']:.2f} s, plain vLLM {what} {baseline:.2f} s: "
          f"gap {gap:+.2f} s (goal <= {goal} s: {'met' if gap <= goal else 'NOT met'})")
    return {"batch": batch, "spotbatch_seconds": mine["wall_seconds"], "plain_vllm_seconds": baseline,
            "gap_seconds": gap, "goal_seconds": goal, "met": gap <= goal, "startup": mine["startup"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="spotbatch bench --adhoc")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--prompts", type=int, default=5, help="prompts per batch")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--compile", choices=COMPILE_MODES, default="default",
                   help="default (what a spec without model.enforce_eager gets; plain vLLM is given the same "
                        "choice), eager or compiled")
    p.add_argument("--out", default="spotbatch-bench-adhoc.json")
    p.add_argument("--plain", help=argparse.SUPPRESS)
    p.add_argument("--one-batch", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.plain:
        _plain_main(args.plain)
        return {}
    if args.one_batch:
        # The figures go to a file: Ray's workers may print to this process's stdout at exit.
        a = Path(args.one_batch)
        b = json.loads(a.read_text())
        figures = {**_one_batch(Path(b["folder"]), b["model"], b["dtype"], b["eager"], b["batch"], b["max_tokens"]),
                   "finished_at": time.time()}
        (a.parent / "one-batch-figures.json").write_text(json.dumps(figures))
        return {}
    import torch

    from cluster.models import fetch
    from operators.engine import effective_dtype

    model_path = str(fetch(args.model))
    dtype = effective_dtype("auto", on_cpu=not torch.cuda.is_available())
    work = batches(args.batches, args.prompts)
    # Each batch is its own run: the choice is the one a run of one batch makes.
    eager, spec_eager, why = compile_for(args.compile, model_path, dtype, args.prompts, args.max_tokens)
    print(f"bench --adhoc: {'eager' if eager else 'compiled'} ({why})", flush=True)
    print(f"bench --adhoc: plain vLLM, {args.batches} batches of {args.prompts} prompts ...", flush=True)
    plain = plain_vllm(model_path, dtype, eager, work, args.max_tokens)
    print("bench --adhoc: spotbatch, the same batches in this process ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="sb-adhoc-") as root:
        ours, again = spotbatch_batches(model_path, dtype, spec_eager, work, args.max_tokens, Path(root))
        kept = kept_ray_batch(Path(root), model_path, dtype, spec_eager, work[0], args.max_tokens)
    ran = {"eager" if b["compile"]["enforce_eager"] else "compiled" for b in ours + [again, kept] if b["compile"]}
    if ran != {"eager" if eager else "compiled"}:  # the runs chose otherwise: the comparison is not like for like
        raise RuntimeError(f"spotbatch's engines ran {ran}, plain vLLM {'eager' if eager else 'compiled'}")
    rows = [_row(i + 1, mine, plain["first_batch_from_start"] if i == 0 else theirs, i == 0)
            for i, (mine, theirs) in enumerate(zip(ours, plain["batch_seconds"]))]
    rows.append({**_row(1, again, plain["first_batch_from_start"], True, " again (Ray already up, new engines)"),
                 "ray_already_up": True})
    rows.append({**_row(1, kept, plain["first_batch_from_start"], True,
                        " in a fresh process joining a kept Ray (`spotbatch up`)"), "kept_ray": True})
    figures = {"model": args.model, "dtype": dtype, "enforce_eager": eager, "compile_choice": why,
               "prompts_per_batch": args.prompts, "max_tokens": args.max_tokens, "batches": rows[:-2],
               "first_batch_ray_up": rows[-2], "first_batch_kept_ray": rows[-1], "plain_vllm": plain}
    Path(args.out).write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":  # vLLM starts workers with spawn
    main()
