"""The feeder's token budget against what vLLM does with it: one process, no Ray, one prompt
set fed through EngineFeeder with a budget of N KV caches (a large N: everything at once, as
plain vLLM's generate). Prints one JSON line: output tokens/s, the requests in the feeder's
engine and vLLM's running set at most, the requests vLLM preempted (dropped their KV, computed
them again), and the tokens it computed in all.

    python -m jobs.bench.kv_budget --kv-caches 1 [--set shared_system] [--prompts 320]

It counts preemptions through vLLM's scheduler (in this process on CPU, where the engine core
runs in-process): a measurement, never used by a run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from jobs.bench.common import MAX_MODEL_LEN, SEED, cpu_env
from jobs.bench.prompt_sets import SETS


def watched(engine: Any, seen: dict[str, int]) -> Any:
    """The engine, its scheduler's preemptions, running set and computed tokens counted."""
    scheduler = engine.llm.llm_engine.engine_core.engine_core.scheduler
    preempt, schedule, step = scheduler._preempt_request, scheduler.schedule, engine.step

    def counted_preempt(*args, **kwargs):
        seen["preempted"] += 1
        return preempt(*args, **kwargs)

    def counted_schedule(*args, **kwargs):
        out = schedule(*args, **kwargs)
        seen["computed_tokens"] += out.total_num_scheduled_tokens
        return out

    def counted_step():
        out = step()
        seen["steps"] += 1
        seen["max_vllm_running"] = max(seen["max_vllm_running"], len(scheduler.running))
        return out

    scheduler._preempt_request, scheduler.schedule, engine.step = counted_preempt, counted_schedule, counted_step
    return engine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kv-caches", type=float, required=True, help="the feeder's budget, in KV caches")
    p.add_argument("--set", choices=sorted(SETS), default="shared_system")
    p.add_argument("--prompts", type=int, default=320)
    p.add_argument("--model", default="smollm2-135m")
    args = p.parse_args()
    os.environ.update(cpu_env())

    from cluster.models import fetch
    from operators.batching import Request, order_for_engine
    from operators.engine import EngineConfig, VLLMEngine, effective_dtype
    from operators.feeder import EngineFeeder

    seen = {"preempted": 0, "computed_tokens": 0, "steps": 0, "max_vllm_running": 0}
    config = EngineConfig(model_path=str(fetch(args.model)), dtype=effective_dtype("auto", on_cpu=True),
                          max_model_len=MAX_MODEL_LEN, enforce_eager=True, seed=SEED)
    feeder = EngineFeeder(lambda: watched(VLLMEngine(config), seen))
    engine = feeder.engine
    feeder.token_budget = int(args.kv_caches * engine.kv_capacity_tokens())
    prompts = SETS[args.set](args.prompts)
    requests = [Request(i, engine.encode(text, prompts.system_prompt, "chat"), m)
                for i, (text, m) in enumerate(zip(prompts.prompts, prompts.max_tokens))]
    sampling = {"max_tokens": max(prompts.max_tokens), "temperature": 0.0, "top_p": 1.0, "seed": SEED, "stop": []}
    began = time.time()
    futures = feeder.submit(order_for_engine(requests, engine.prefix_block_tokens), sampling)
    tokens = sum(f.result().completion_tokens for f in futures)
    seconds = time.time() - began
    print(json.dumps({"set": args.set, "kv_caches": args.kv_caches, "kv_capacity_tokens": engine.kv_capacity_tokens(),
                      "output_tokens": tokens, "seconds": round(seconds, 2),
                      "tokens_per_second": round(tokens / seconds, 1), "max_in_engine": feeder.stats.max_running,
                      "load": os.getloadavg(), **seen}))


if __name__ == "__main__":
    main()
