"""What a compiled engine's start costs, and what the compile caches save: the same model started
compiled, each time in a fresh process, as spotbatch's CPU engines start it (operators/engine.py):

  cold         empty caches (vLLM's VLLM_CACHE_ROOT and torch inductor's TORCHINDUCTOR_CACHE_DIR)
  same node    again, with the caches the cold start left
  new node     empty caches again, filled first from a shared folder the cold start published to
               (`model.compile_cache`, pipelines/engine/compile_cache.py), as a replacement spot node is

With --aot, also vLLM's AOT compile cache (its default with torch >= 2.10; spotbatch's CPU engines
turn it off): cold, then the same node again. Prints each start's seconds and the ratios to cold.

    python -m jobs.bench.compile_cache [--model smollm2-135m] [--aot]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _start(model: str, shared: str | None) -> None:
    """One compiled start, in this process: prints its seconds and what the shared folder did."""
    from operators.engine import engine_env

    os.environ.update({k: v for k, v in engine_env(0.0, None).items() if k != "VLLM_USE_AOT_COMPILE"})
    from cluster.models import fetch
    from pipelines.engine.compile_cache import around_engine_start

    path = str(fetch(model))
    began = time.time()
    with around_engine_start(shared, {}, compiles=True) as report:
        from vllm import LLM

        LLM(model=path, max_model_len=512, enforce_eager=False, seed=0)
    print("RESULT " + json.dumps({"seconds": time.time() - began, "cache": report.to_json() if report else None}))


def start(model: str, caches: Path, aot: bool, shared: str | None = None) -> dict:
    env = {**os.environ, "VLLM_USE_AOT_COMPILE": "1" if aot else "0", "VLLM_CACHE_ROOT": str(caches / "vllm"),
           "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor")}
    cmd = [sys.executable, "-m", "jobs.bench.compile_cache", "--start", "--model", model]
    out = subprocess.run(cmd + (["--shared", shared] if shared else []), env=env, capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(line[0][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--aot", action="store_true", help="also vLLM's AOT compile cache: cold, then again")
    p.add_argument("--start", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shared", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.start:
        _start(args.model, args.shared)
        return
    with tempfile.TemporaryDirectory(prefix="sb-compile-") as work:
        caches, shared = Path(work) / "node", str(Path(work) / "shared")
        cold = start(args.model, caches, False, shared)  # publishes what it compiled
        again = start(args.model, caches, False)
        shutil.rmtree(caches)
        new_node = start(args.model, caches, False, shared)
        print(f"cold: {cold['seconds']:.1f} s (published {cold['cache']['published_inductor_files']} inductor files, "
              f"{len(cold['cache']['published'])} vLLM entries)")
        print(f"same node again: {again['seconds']:.1f} s (x{again['seconds'] / cold['seconds']:.2f})")
        print(f"new node, shared folder: {new_node['seconds']:.1f} s (x{new_node['seconds'] / cold['seconds']:.2f}; "
              f"fetched {new_node['cache']['fetched_inductor_files']} inductor files, "
              f"published {new_node['cache']['published_inductor_files']})", flush=True)
        if args.aot:
            aot = Path(work) / "aot"
            first, second = start(args.model, aot, True), start(args.model, aot, True)
            print(f"vLLM's AOT cache: cold {first['seconds']:.1f} s, same node again {second['seconds']:.1f} s "
                  f"(x{second['seconds'] / first['seconds']:.2f})", flush=True)


if __name__ == "__main__":  # vLLM starts workers with spawn
    main()
