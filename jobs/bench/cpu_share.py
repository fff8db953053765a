"""Where the CPU goes while the benchmark's engines generate: a profile by process.

`python -m jobs.bench.cpu_share [--prompts N] [--delay S] [--window S]` runs plain vLLM and then
spotbatch on the long-tail prompts, as `spotbatch bench` does, and samples every process's CPU
time (/proc/PID/stat) over a window in the middle of each run's generation. It prints each
group's share of the machine's CPU, and the last line is the JSON. On a CPU engine everything
that is not the engine takes cores from it: this says how much that is, for both runners.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from jobs.bench.prompt_sets import SETS

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """pid -> (user + system ticks, command line) of every process now."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(entry)] = (int(fields[11]) + int(fields[12]), cmd)
    return out


def group_of(cmd: str) -> str:
    if "MapWorker" in cmd or "jobs.bench.plain_vllm" in cmd:
        return "engine process"
    if "jobs.cli run" in cmd:
        return "spotbatch driver"
    if "ray" in cmd:
        return "Ray's own processes"
    return "everything else"


def sample(seconds: float) -> dict[str, float]:
    """Each group's share of all cores over the next `seconds`."""
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    shares: dict[str, float] = {}
    capacity = seconds * TICKS * (os.cpu_count() or 1)
    for pid, (ticks, cmd) in after.items():
        used = ticks - before.get(pid, (0, ""))[0]
        if used > 0:
            shares[group_of(cmd)] = shares.get(group_of(cmd), 0.0) + used / capacity
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def profile(runner: str, prompts: int, delay: float, window: float, model: str, dtype: str) -> dict[str, float]:
    """Start one runner, sample a window once its engine is generating, let it finish."""
    found: dict[str, dict[str, float]] = {}
    sampler = threading.Thread(target=lambda: (time.sleep(delay), found.setdefault("shares", sample(window))))
    with tempfile.TemporaryDirectory(prefix="sb-cpu-share-") as work:
        sampler.start()
        if runner == "spotbatch":
            from jobs.bench.spotbatch_runner import run_spotbatch

            run_spotbatch(SETS["long_tail"](prompts), Path(work), model, dtype, True)
        else:
            ps = SETS["long_tail"](prompts)
            pf = Path(work) / "prompts.json"
            pf.write_text(json.dumps({"prompts": ps.prompts, "max_tokens": ps.max_tokens,
                                      "system_prompt": ps.system_prompt}))
            subprocess.run([sys.executable, "-m", "jobs.bench.plain_vllm", str(pf), str(Path(work) / "r.json"),
                            "--model", model, "--dtype", dtype, "--enforce-eager"], check=True, capture_output=True)
        sampler.join()
    return found["shares"]


def main() -> None:
    from cluster.models import fetch
    from operators.engine import effective_dtype

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=320)
    p.add_argument("--delay", type=float, default=60.0, help="seconds from launch to the window (past start-up)")
    p.add_argument("--window", type=float, default=30.0)
    args = p.parse_args()
    model = str(fetch("smollm2-135m"))
    dtype = effective_dtype("auto", on_cpu=True)
    result = {}
    for runner in ("plain_vllm", "spotbatch"):
        result[runner] = profile(runner, args.prompts, args.delay, args.window, model, dtype)
        print(f"{runner}: share of the machine's CPU over {args.window:.0f} s of generation")
        for group, share in result[runner].items():
            print(f"  {group:22s} {share:6.1%}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
