"""`spotbatch bench --serve`: what `spotbatch serve` adds to a batch. One private local Ray for
the whole bench (its own temp dir and ports, torn down by PID) and the server in a thread of this
process (server/app.py serve_in_thread), serving examples/serve.yaml's chat model (SmolLM2) with
an eager engine, as tests/test_serve_engine.py does.

1. The same file of `--lines` chat requests, A: as a `spotbatch run` (pipelines.run.run, the spec
   the server would build for it), B: through the server with the OpenAI SDK (upload, create,
   poll every `--poll` s, download the output). Both on the same warm engine (the server's
   driver and the run share this process's warm pool; one batch through the server loads it
   first), in turn for `--rounds` rounds, the order swapped each round. Prints the median of
   each, the median difference per batch (goal: at most 2 s), and where B's seconds go.
2. `--batches` small batches (`--small-lines` lines) in a row through the SDK: the model loads
   among them (a run's actor record says `warm` when it reused an engine), and the process's
   resident memory (the server's: its driver runs every batch here; the SDK client is the rest)
   after batch 10 and after the last, the peak since the first of them (VmHWM, reset before).

    spotbatch bench --serve [--lines 48] [--rounds 3] [--batches 50] [--out spotbatch-bench-serve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-bench-serve-0123456789"
MODEL = "gpt-4o-mini"  # examples/serve.yaml's chat model
GOAL_SECONDS = 2.0  # the issue's: the server adds at most this to a batch


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spotbatch bench --serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=48, help="chat requests in the file run both ways (default 48)")
    p.add_argument("--max-tokens", type=int, default=32, help="each request's max_completion_tokens (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds, the order swapped each round (default 3)")
    p.add_argument("--batches", type=int, default=50, help="small batches in a row (default 50)")
    p.add_argument("--small-lines", type=int, default=4, help="requests in each small batch (default 4)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between the SDK's polls (default 0.5)")
    p.add_argument("--out", default="spotbatch-bench-serve.json")
    return p.parse_args(argv)


def chat_lines(n: int, max_tokens: int, tag: str) -> list[dict[str, Any]]:
    return [{"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": MODEL, "max_completion_tokens": max_tokens, "temperature": 0,
                      "messages": [{"role": "user", "content": f"Write one sentence about the number {i}."}]}}
            for i in range(n)]


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def serve_config():
    """examples/serve.yaml with an eager engine (it starts in seconds on a CPU; the tests' choice)."""
    from server.config import config_from

    data = yaml.safe_load((ROOT / "examples" / "serve.yaml").read_text())
    data["models"][MODEL]["model"]["enforce_eager"] = True
    return config_from(data)


def run_spec(config, jsonl: Path, output: Path):
    """The spec the server runs a batch of this file as (server/driver.py's own), 24 h window."""
    from server.driver import served_spec

    return served_spec(config, [MODEL], "openai_batch", (str(jsonl), str(output), {}), 86400)


def run_records(output: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run's (only) invocation record and its actors' records."""
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    records = Records(OutputStore(str(output)))
    (invocation,) = records.runs().values()
    return invocation, list(records.actors().values())


def through_run(config, jsonl: Path, output: Path, address: str) -> dict[str, Any]:
    """A: the file as `spotbatch run` (in this process: the server's warm engine is reused)."""
    from pipelines.run import run
    from pipelines.stops.control import RunControl

    started = time.monotonic()
    summary = run(run_spec(config, jsonl, output), address=address, interactive=False, control=RunControl())
    seconds = time.monotonic() - started
    if not summary.finished:
        raise RuntimeError(f"the run did not finish: {summary.stopped or summary.last_fault}")
    _, actors = run_records(output)
    return {"seconds": seconds, "completion_tokens": summary.completion_tokens,
            "model_loads": sum(not a.get("warm") for a in actors)}


def through_server(api, store: Path, jsonl: Path, poll: float) -> dict[str, Any]:
    """B: upload, create, poll, download; the seconds of each step, and the run's own inside."""
    from server.keys import key_hash

    t0 = time.time()
    with open(jsonl, "rb") as fh:
        up = api.files.create(file=(jsonl.name, fh), purpose="batch")
    t_up = time.time()
    batch = api.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
    t_created = time.time()
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(poll)
        batch = api.batches.retrieve(batch.id)
    t_seen = time.time()
    if batch.status != "completed":
        raise RuntimeError(f"batch {batch.id} ended {batch.status}: {batch.errors}")
    answers = api.files.content(batch.output_file_id).text.splitlines()
    t_end = time.time()
    invocation, actors = run_records(store / "runs" / key_hash(KEY)[:32] / batch.id)
    return {"seconds": t_end - t0, "answers": len(answers), "model_loads": sum(not a.get("warm") for a in actors),
            "steps": {"upload": t_up - t0, "create": t_created - t_up,
                      "validate_and_queue": invocation["invoked_at"] - t_created,
                      "run": invocation["ended_at"] - invocation["invoked_at"],
                      "finalize_and_poll": t_seen - invocation["ended_at"], "download": t_end - t_seen}}


def compare(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds: A's seconds, B's, their difference per round, B's steps, and B's
    seconds outside its run (on a busy machine the runs' own seconds vary more than the server adds)."""
    steps = rounds[0]["server"]["steps"]
    return {"run_seconds": statistics.median(r["run"]["seconds"] for r in rounds),
            "server_seconds": statistics.median(r["server"]["seconds"] for r in rounds),
            "added_seconds": statistics.median(r["server"]["seconds"] - r["run"]["seconds"] for r in rounds),
            "server_steps": {k: statistics.median(r["server"]["steps"][k] for r in rounds) for k in steps},
            # the server's own seconds around its run: what it adds whatever the engine's speed that round
            "outside_run_seconds": statistics.median(r["server"]["seconds"] - r["server"]["steps"]["run"]
                                                     for r in rounds),
            "goal_seconds": GOAL_SECONDS}


def side_by_side(api, store: Path, config, work: Path, args: argparse.Namespace, address: str) -> dict[str, Any]:
    jsonl = write_jsonl(work / "batch.jsonl", chat_lines(args.lines, args.max_tokens, "q"))
    first = through_server(api, store, jsonl, args.poll)  # loads the engine both then use
    print(f"bench: first batch through the server (loads the engine): {first['seconds']:.2f} s", flush=True)
    rounds = []
    for r in range(args.rounds):
        one: dict[str, Any] = {}
        for way in (("run", "server") if r % 2 == 0 else ("server", "run")):
            one[way] = (through_run(config, jsonl, work / f"run-{r}", address) if way == "run"
                        else through_server(api, store, jsonl, args.poll))
        print(f"bench: round {r + 1}: spotbatch run {one['run']['seconds']:.2f} s, through the server "
              f"{one['server']['seconds']:.2f} s ({one['server']['seconds'] - one['run']['seconds']:+.2f} s)",
              flush=True)
        rounds.append(one)
    return {"lines": args.lines, "max_completion_tokens": args.max_tokens, "poll_seconds": args.poll,
            "first_through_server": first, "rounds": rounds, **compare(rounds)}


def memory() -> dict[str, float]:
    """This process's resident memory now and its peak since the last reset, MB (/proc status)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024}


def reset_peak() -> bool:
    """Resets VmHWM to the memory now (Linux: 5 to clear_refs), so the peak is the small batches'."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def in_a_row(api, store: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    peak_reset = reset_peak()
    seen: dict[str, Any] = {"at_start": memory(), "peak_reset": peak_reset}
    seconds, loads = [], 0
    for n in range(1, args.batches + 1):
        jsonl = write_jsonl(work / f"small-{n}.jsonl", chat_lines(args.small_lines, 8, f"s{n}"))
        one = through_server(api, store, jsonl, args.poll)
        seconds.append(one["seconds"])
        loads += one["model_loads"]
        if n in (10, args.batches):
            seen[f"after_{n}"] = memory()
            print(f"bench: after {n} small batches: RSS {seen[f'after_{n}']['rss_mb']:.0f} MB, peak "
                  f"{seen[f'after_{n}']['peak_rss_mb']:.0f} MB; model loads so far {loads}", flush=True)
    last, tenth = seen[f"after_{args.batches}"], seen.get("after_10", seen["at_start"])
    return {"batches": args.batches, "lines_each": args.small_lines, "model_loads": loads,
            "median_batch_seconds": statistics.median(seconds), "batch_seconds": seconds, "memory": seen,
            "peak_ratio_last_to_10": last["peak_rss_mb"] / tenth["peak_rss_mb"]}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from openai import OpenAI

    from cluster import local_ray
    from jobs.bench.main import machine
    from pipelines.engine.warm_pool import POOL
    from server.app import Serving, serve_in_thread
    from server.keys import CLEAR_KEY

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    config = serve_config()
    figures: dict[str, Any] = {"machine": machine(), "load_average": os.getloadavg(), "model": MODEL,
                               "served_model": config.models[MODEL].model}
    with tempfile.TemporaryDirectory(prefix="sb-bench-serve-") as tmp:
        work = Path(tmp)
        os.environ["SPOTBATCH_LOCAL_RAY"] = str(work / "local-ray.json")  # never the machine's own
        os.environ[CLEAR_KEY] = KEY  # the server takes it out of the environment as it starts
        state, _ = local_ray.up()
        try:
            with serve_in_thread(Serving(config, str(work / "store"), address=state["address"])) as url:
                api = OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120)
                figures["side_by_side"] = side_by_side(api, work / "store", config, work, args, state["address"])
                figures["in_a_row"] = in_a_row(api, work / "store", work, args)
        finally:
            POOL.release()
            local_ray.down()
    return figures


def report(figures: dict[str, Any]) -> str:
    s, row = figures["side_by_side"], figures["in_a_row"]
    steps = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in s["server_steps"].items())
    mem, n = row["memory"], row["batches"]
    tenth = mem.get("after_10", mem["at_start"])
    return "\n".join([
        f"serve bench: {s['lines']} chat lines, median of {len(s['rounds'])} rounds, both on a warm engine:",
        f"  spotbatch run {s['run_seconds']:.2f} s; through the server (SDK upload, create, poll every "
        f"{s['poll_seconds']} s, download) {s['server_seconds']:.2f} s: x{s['server_seconds'] / s['run_seconds']:.2f}, "
        f"{s['added_seconds']:+.2f} s per batch (goal <= {s['goal_seconds']:.0f} s: "
        f"{'met' if s['added_seconds'] <= s['goal_seconds'] else 'missed'})",
        f"  the server's seconds (median): {steps}; outside its run {s['outside_run_seconds']:.2f} s",
        f"  {n} batches of {row['lines_each']} lines in a row: {row['model_loads']} model loads, median "
        f"{row['median_batch_seconds']:.2f} s a batch; RSS after 10 {tenth['rss_mb']:.0f} MB (peak "
        f"{tenth['peak_rss_mb']:.0f}), after {n} {mem[f'after_{n}']['rss_mb']:.0f} MB (peak "
        f"{mem[f'after_{n}']['peak_rss_mb']:.0f}): peak x{row['peak_ratio_last_to_10']:.3f}"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    figures = {"args": vars(args), **bench(args)}
    print(report(figures))
    Path(args.out).write_text(json.dumps(figures, indent=1))
    print(f"bench: figures written to {args.out}")
    return figures


if __name__ == "__main__":
    main()
