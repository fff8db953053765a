"""`spotbatch bench --task embed`: the same texts embedded by plain vLLM (`LLM.embed`, one
process) and by `spotbatch run` (task embed, Ray, units committed), one after the other on this
machine, each in a fresh process. Prints texts/s of each while embedding (the engine's window:
first request added to last result) and end to end (process start to last result), and
spotbatch's ratio to plain vLLM (with `--rounds`, the two in turn, and the median ratio); the last
line is the JSON, also written to `--out`.

    python -m jobs.bench.embed plain TEXTS.json OUT.json --model DIR --dtype float32
is the plain runner, run by the bench in its own process.
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
import yaml

WORDS = ("spot node batch token prompt model engine cost price summary label answer question data shard unit "
         "result error cheap fast resume commit ledger search corpus document passage vector index query").split()


def texts(n: int) -> list[str]:
    """`n` texts of 8 to 120 words (a corpus's passages are of many lengths), all different."""
    return [" ".join(WORDS[(i * 7 + j * 3 + j * j) % len(WORDS)] for j in range(8 + (i * 37) % 113)) + f" {i}"
            for i in range(n)]


def plain(texts_file: str, out: str, model: str, dtype: str) -> None:
    """The plain runner: one `LLM.embed` over every text."""
    from jobs.bench.common import cpu_env

    os.environ.update(cpu_env())
    from vllm import LLM

    data = json.loads(Path(texts_file).read_text())
    llm = LLM(model=model, runner="pooling", dtype=dtype, enforce_eager=True, seed=0)
    began = time.time()
    outputs = llm.embed(data, use_tqdm=False)
    ended = time.time()
    Path(out).write_text(json.dumps({"texts": len(outputs), "first_at": began, "last_at": ended,
                                     "prompt_tokens": sum(len(o.prompt_token_ids) for o in outputs)}))


def run_plain(corpus: list[str], work: Path, model: str, dtype: str) -> dict[str, Any]:
    (work / "texts.json").write_text(json.dumps(corpus))
    launched = time.time()
    cmd = [sys.executable, "-m", "jobs.bench.embed", "plain", str(work / "texts.json"), str(work / "plain.json"),
           "--model", model, "--dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"plain vLLM failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    got = json.loads((work / "plain.json").read_text())
    return _figures(got["texts"], got["first_at"], got["last_at"], launched)


def run_spotbatch(corpus: list[str], work: Path, model: str, dtype: str, units: int) -> dict[str, Any]:
    """`spotbatch run` on the texts as Parquet; the engine's window from the run's own records,
    with what its engine did: the most requests it held at once, and how busy it was."""
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    (work / "in").mkdir()
    pq.write_table(pa.table({"id": list(range(len(corpus))), "text": corpus}), work / "in" / "part-0.parquet")
    words = sum(len(t.split()) for t in corpus)
    spec = {"task": "embed", "model": {"name": model, "dtype": dtype, "enforce_eager": True},
            "input": {"paths": str(work / "in"), "prompt_column": "text"},
            "compute": {"actors": 1, "tokens_per_unit": max(1, int(words * 1.3) // units)},
            "output": {"path": str(work / "out")}}
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    launched = time.time()
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", str(work / "spec.yaml")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"spotbatch run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    engines = [t["end"]["engine"] for tries in Records(OutputStore(str(work / "out"))).attempts().values()
               for t in tries.values() if "engine" in t.get("end", {})]
    first = min(e["first_added_at"] for e in engines)
    last = max(e["last_finished_at"] for e in engines)
    latest = max(engines, key=lambda e: e["last_finished_at"])  # one engine: its figures are cumulative
    return {**_figures(len(corpus), first, last, launched), "units": len(engines),
            "max_running": latest["max_running"], "steps": latest["steps"],
            "busy_fraction": latest["busy_seconds"] / (last - first)}


def _figures(n: int, first: float, last: float, launched: float) -> dict[str, Any]:
    return {"texts": n, "embed_seconds": last - first, "wall_seconds": last - launched,
            "texts_per_second": n / (last - first), "texts_per_second_end_to_end": n / (last - launched)}


RUNNERS = {"plain_vllm": run_plain, "spotbatch": run_spotbatch}


def bench(n: int, model: str = "all-minilm-l6-v2", units: int = 8, out: str = "spotbatch-bench-embed.json",
          rounds: int = 1) -> dict:
    """`rounds` > 1 runs the two in turn that many times, the first of each round alternating
    (this machine's speed drifts, and other work shares its cores); each round's ratio compares
    neighbours, and the median of the rounds is reported."""
    import statistics

    from cluster.models import fetch
    from jobs.bench.main import machine

    corpus, folder = texts(n), str(fetch(model))
    figures: dict[str, Any] = {"machine": machine(), "model": model, "texts": n, "dtype": "float32", "rounds": []}
    for r in range(rounds):
        this_round: dict[str, Any] = {}
        for name in list(RUNNERS)[::1 if r % 2 == 0 else -1]:
            print(f"bench: embed: {name} on {n} texts (round {r + 1} of {rounds}) ...", flush=True)
            with tempfile.TemporaryDirectory(prefix=f"sb-bench-embed-{name}-") as work:
                args = (corpus, Path(work), folder, "float32") + ((units,) if name == "spotbatch" else ())
                this_round[name] = RUNNERS[name](*args)
            print(_format(name, this_round[name]), flush=True)
        for kind in ("", "_end_to_end"):
            this_round[f"ratio{kind}"] = (this_round["spotbatch"][f"texts_per_second{kind}"]
                                          / this_round["plain_vllm"][f"texts_per_second{kind}"])
        print(f"  spotbatch against plain vLLM: x{this_round['ratio']:.3f} while embedding, "
              f"x{this_round['ratio_end_to_end']:.3f} end to end", flush=True)
        figures["rounds"].append(this_round)
    figures.update({name: figures["rounds"][0][name] for name in RUNNERS})
    for kind in ("ratio", "ratio_end_to_end"):
        figures[kind] = statistics.median(rd[kind] for rd in figures["rounds"])
    if rounds > 1:
        print(f"  median of {rounds} rounds: x{figures['ratio']:.3f} while embedding, "
              f"x{figures['ratio_end_to_end']:.3f} end to end")
    Path(out).write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    return figures


def _format(name: str, r: dict[str, Any]) -> str:
    engine = (f"; {r['units']} units, at most {r['max_running']} requests in the engine at once, "
              f"{r['steps']} steps, engine busy {r['busy_fraction']:.0%}" if "units" in r else "")
    return (f"  {name:11s} {r['texts_per_second']:.1f} texts/s while embedding ({r['embed_seconds']:.1f} s); "
            f"end to end {r['texts_per_second_end_to_end']:.1f} texts/s over {r['wall_seconds']:.1f} s{engine}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["plain"])
    p.add_argument("texts")
    p.add_argument("out")
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    plain(args.texts, args.out, args.model, args.dtype)


if __name__ == "__main__":  # vLLM starts workers with spawn
    main()
