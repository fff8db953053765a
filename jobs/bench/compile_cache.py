"""Whether vLLM's compile cache saves a compiled engine's start on a node: the same model
started compiled twice, each time in a fresh process, with vLLM's AOT compile cache (its
default with torch >= 2.10) and with its older cache (VLLM_USE_AOT_COMPILE=0, what spotbatch's
CPU engines use, operators/engine.py). Prints each start's load-and-compile seconds and the
ratio of the second start to the first.

    python -m jobs.bench.compile_cache [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def _start(model: str) -> None:
    """One compiled start, in this process: prints its seconds."""
    from operators.engine import engine_env

    os.environ.update({k: v for k, v in engine_env(0.0, None).items() if k != "VLLM_USE_AOT_COMPILE"})
    from vllm import LLM

    from cluster.models import fetch

    path = str(fetch(model))
    began = time.time()
    LLM(model=path, max_model_len=512, enforce_eager=False, seed=0)
    print(f"SECONDS {time.time() - began:.1f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--start", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.start:
        _start(args.model)
        return
    for name, aot in (("AOT compile cache (vLLM's default)", "1"), ("older cache (spotbatch on CPU)", "0")):
        with tempfile.TemporaryDirectory(prefix="sb-vllm-cache-") as cache:
            env = {**os.environ, "VLLM_USE_AOT_COMPILE": aot, "VLLM_CACHE_ROOT": cache}
            seconds = []
            for _ in range(2):
                out = subprocess.run([sys.executable, "-m", "jobs.bench.compile_cache", "--start", "--model",
                                      args.model], env=env, capture_output=True, text=True)
                line = [x for x in out.stdout.splitlines() if x.startswith("SECONDS ")]
                if out.returncode or not line:
                    raise RuntimeError(out.stderr[-3000:])
                seconds.append(float(line[0].split()[1]))
            print(f"{name}: first start {seconds[0]:.1f} s, second {seconds[1]:.1f} s "
                  f"(x{seconds[1] / seconds[0]:.2f})", flush=True)


if __name__ == "__main__":  # vLLM starts workers with spawn
    main()
