"""Baseline: the prompts through plain `vllm.LLM.generate` in one process, as a user would
run it without any orchestration. `python -m jobs.bench.plain_vllm PROMPTS.json OUT.json ...`"""

from __future__ import annotations

import json
import os
import time

from jobs.bench.common import RunnerResult, chat_texts, cpu_env, engine_settings, runner_args, write_result


def main() -> None:
    args = runner_args()
    os.environ.update(cpu_env())
    with open(args.prompts) as fh:
        data = json.load(fh)

    from vllm import LLM, SamplingParams

    llm = LLM(**engine_settings(args.model, args.dtype, args.enforce_eager))
    tokenizer = llm.get_tokenizer()
    began = time.time()
    texts = chat_texts(tokenizer, data["prompts"], data["system_prompt"])
    params = [SamplingParams(max_tokens=m, temperature=0.0, seed=0) for m in data["max_tokens"]]
    outputs = llm.generate(texts, params, use_tqdm=False)
    ended = time.time()
    write_result(args.out, RunnerResult(
        runner="plain_vllm",
        requests=len(outputs),
        prompt_tokens=sum(len(o.prompt_token_ids) for o in outputs),
        output_tokens=sum(len(o.outputs[0].token_ids) for o in outputs),
        first_request_at=began,  # tokenizing is inside the window, as spotbatch's is
        last_result_at=ended,
        busy_fraction=1.0,  # one generate call over every prompt: by definition never idle
    ))


if __name__ == "__main__":  # vLLM starts workers with spawn
    main()
