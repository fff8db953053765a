"""`spotbatch bench`: the same prompts through plain vLLM, spotbatch and Ray Data's LLM
processor, one after another on this machine, each in a fresh process. Prints output tokens/s
of each while generating (steady state) and end to end (process start to last result, start-up
included), the ratios against plain vLLM, and spotbatch's engine-busy fraction; the last line
of output is the JSON, which is also written to a file.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs.bench.common import RunnerResult, compile_for
from jobs.bench.prompt_sets import SETS, PromptSet
from jobs.bench.spotbatch_runner import run_spotbatch

RUNNERS = ("plain_vllm", "spotbatch", "ray_data_llm")
SIZES = {"quick": 48, "full": 320}  # full: a few hundred prompts, minutes of engine work each


def machine() -> dict[str, Any]:
    from operators.engine import cpu_has_native_bf16

    model = "unknown"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os

    return {"cpu": model, "cores": os.cpu_count(), "native_bf16": cpu_has_native_bf16(),
            "python": platform.python_version(), "gpu": _has_gpu()}


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _subprocess_runner(module: str, prompts_file: Path, out: Path, model: str, dtype: str, eager: bool) -> None:
    cmd = [sys.executable, "-m", module, str(prompts_file), str(out), "--model", model, "--dtype", dtype]
    if eager:
        cmd.append("--enforce-eager")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def run_one(runner: str, prompts: PromptSet, work: Path, model: str, dtype: str, eager: bool,
            spotbatch_eager: bool | None = None) -> dict[str, Any]:
    """`spotbatch_eager` is spotbatch's model.enforce_eager (None: it decides; the others run `eager`)."""
    prompts_file = work / "prompts.json"
    prompts_file.write_text(json.dumps({"prompts": prompts.prompts, "max_tokens": prompts.max_tokens,
                                        "system_prompt": prompts.system_prompt}))
    out = work / f"{runner}.json"
    launched = time.time()
    extra: dict[str, Any] = {}
    if runner == "spotbatch":
        result, units = run_spotbatch(prompts, work / "spotbatch", model, dtype, spotbatch_eager)
        extra["units"] = units
    else:
        _subprocess_runner(f"jobs.bench.{runner}", prompts_file, out, model, dtype, eager)
        result = RunnerResult(**json.loads(out.read_text()))
    wall = time.time() - launched
    return {**result.to_json(), **extra,
            "wall_seconds": wall,
            "startup_seconds": result.first_request_at - launched,
            "generate_seconds": result.generate_seconds,
            "tokens_per_second_steady": result.output_tokens / result.generate_seconds,
            "tokens_per_second_end_to_end": result.output_tokens / wall}


def bench(quick: bool = False, sets: list[str] | None = None, runners: list[str] | None = None,
          out: str = "spotbatch-bench.json", model: str = "smollm2-135m", compile: str = "eager",
          prompts: int | None = None, rounds: int = 1) -> dict[str, Any]:
    """`rounds` > 1 runs the runners in turn that many times: this machine's speed drifts
    between runs (plain vLLM alone: 96 to 107 tokens/s on the same prompts), so each round's
    ratio compares neighbours, and the median of the rounds is reported. `compile` is eager,
    compiled, or default: what a user who leaves model.enforce_eager unset gets (per set)."""
    from cluster.models import fetch
    from operators.engine import effective_dtype

    model_path = str(fetch(model))
    dtype = effective_dtype("auto", on_cpu=not _has_gpu())
    n = prompts or SIZES["quick" if quick else "full"]
    figures: dict[str, Any] = {"machine": machine(), "model": model, "dtype": dtype, "compile": compile,
                               "prompts_per_set": n, "rounds": rounds, "sets": {}}
    for set_name in sets or list(SETS):
        prompt_set = SETS[set_name](n)
        eager, spotbatch_eager, why = compile_for(compile, model_path, dtype, len(prompt_set),
                                                  max(prompt_set.max_tokens))
        entry: dict[str, Any] = {"notes": prompt_set.notes, "rounds": [], "enforce_eager": eager, "compile_choice": why}
        print(f"bench: {set_name}: {'eager' if eager else 'compiled'} ({why})", flush=True)
        figures["sets"][set_name] = entry
        for r in range(rounds):
            this_round: dict[str, Any] = {}
            for runner in runners or RUNNERS:
                print(f"bench: {set_name}: {runner} on {n} prompts (round {r + 1} of {rounds}) ...", flush=True)
                with tempfile.TemporaryDirectory(prefix=f"sb-bench-{runner}-") as work:
                    try:
                        this_round[runner] = run_one(runner, prompt_set, Path(work), model_path, dtype, eager,
                                                        spotbatch_eager)
                    except Exception as err:  # one runner failing must not lose the others' figures
                        this_round[runner] = {"error": str(err)[-2000:]}
                print(format_runner(runner, this_round[runner]), flush=True)
            entry["rounds"].append({"runners": this_round, "ratios": ratios(this_round)})
            print(format_ratios(set_name, entry["rounds"][-1]["ratios"]), flush=True)
        entry["ratios"] = median_ratios([rd["ratios"] for rd in entry["rounds"]])
        entry["runners"] = entry["rounds"][0]["runners"]
        if rounds > 1:
            print(format_ratios(f"{set_name} (median of {rounds} rounds)", entry["ratios"]), flush=True)
    Path(out).write_text(json.dumps(figures, indent=1))
    print(f"bench: figures written to {out}")
    print(json.dumps(figures))
    return figures


def ratios(runners: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each runner's tokens/s over plain vLLM's, steady state and end to end."""
    base = runners.get("plain_vllm", {})
    result: dict[str, Any] = {}
    for name, r in runners.items():
        if name == "plain_vllm" or "error" in r or "error" in base or not base:
            continue
        result[name] = {
            "steady_state": r["tokens_per_second_steady"] / base["tokens_per_second_steady"],
            "end_to_end": r["tokens_per_second_end_to_end"] / base["tokens_per_second_end_to_end"],
        }
    return result


def median_ratios(per_round: list[dict[str, Any]]) -> dict[str, Any]:
    """Each runner's median ratio over the rounds it finished."""
    import statistics

    names = {name for r in per_round for name in r}
    return {name: {kind: statistics.median(r[name][kind] for r in per_round if name in r)
                   for kind in ("steady_state", "end_to_end")} for name in sorted(names)}


def format_runner(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"  {name:13s} FAILED: {r['error'].strip().splitlines()[-1] if r['error'].strip() else ''}"
    busy = f", engine busy {r['busy_fraction']:.0%}" if r.get("busy_fraction") is not None else ""
    return (f"  {name:13s} {r['output_tokens']} output tokens; steady {r['tokens_per_second_steady']:.1f} tok/s "
            f"over {r['generate_seconds']:.1f} s; end to end {r['tokens_per_second_end_to_end']:.1f} tok/s over "
            f"{r['wall_seconds']:.1f} s (start-up {r['startup_seconds']:.1f} s){busy}"
            + (f"; {r['notes']}" if r.get("notes") else ""))


def format_ratios(set_name: str, ratios_: dict[str, Any]) -> str:
    lines = [f"  {set_name}: against plain vLLM"]
    for name, r in ratios_.items():
        lines.append(f"    {name:13s} steady state x{r['steady_state']:.3f}, end to end x{r['end_to_end']:.3f}")
    return "\n".join(lines)
