"""The embed path alone against plain `LLM.embed`, in one process, on one engine and one thread:
the two alternate on slices of the same texts, so the drift of a shared machine hits both alike
(the whole-run bench, jobs/bench/embed.py, compares two processes a minute apart).

    python -m jobs.bench.embed_path --texts 2400 --rounds 12 --units 2

Each round: one slice through `LLM.embed`, and the same slice through spotbatch's embed path
(operators/embed.py's EmbedOperator and operators/feeder.py's EngineFeeder), split into `units`
units run side by side as an engine actor runs them; texts/s of each over its wall time,
tokenization included for both. No Ray, no commits: what the actor's engine side costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor


def shared_feeder(model: str):
    """An EngineFeeder (on the embedding engine of `model`) that also runs a function on its own
    thread, the one that built and steps the engine (operators/feeder.py says why that matters),
    while it holds no request."""
    from cluster.models import fetch
    from operators.engine import EngineConfig, VLLMEngine
    from operators.feeder import EngineFeeder

    class SharedFeeder(EngineFeeder):
        def __init__(self, *a, **k):
            self.jobs: deque = deque()
            super().__init__(*a, **k)

        def on_engine(self, fn):
            done: Future = Future()
            with self._cond:
                self.jobs.append((fn, done))
                self._cond.notify_all()
            return done.result()

        def _loop(self) -> None:  # the feeder's own loop, with the jobs between its requests
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self.jobs or self._pending or self._running)
                    job = self.jobs.popleft() if self.jobs and not self._pending and not self._running else None
                if job:
                    job[1].set_result(job[0](self.engine))
                    continue
                for item in self._take_admitted():
                    self._add(item)
                if self._running:
                    self._step()

    config = EngineConfig(model_path=str(fetch(model)), dtype="float32", enforce_eager=True, task="embed")
    return SharedFeeder(lambda: VLLMEngine(config))


def runners(feeder, units: int):
    """The two ways through, each a function from texts to the seconds they took."""
    from operators.embed import EmbedOperator
    from operators.generate import RowBatch
    from operators.tokens import PromptForm

    op = EmbedOperator(feeder.engine, feeder, {"dimensions": None, "normalize": None, "truncate_prompt_tokens": None},
                       PromptForm(None, "raw"))

    def plain(chunk: list[str]) -> float:
        began = time.time()
        feeder.on_engine(lambda e: e.llm.embed(chunk, use_tqdm=False))
        return time.time() - began

    def unit(rows: list[str]) -> None:
        feeder.wait_until_hungry()  # as an engine actor's unit does (pipelines/engine/actor.py)
        try:
            result = op(RowBatch(rows, [None] * len(rows)))
        finally:
            feeder.release_turn()
        assert result["error"] == [None] * len(rows), result["error"]

    def spotbatch(chunk: list[str]) -> float:
        began = time.time()
        with ThreadPoolExecutor(units) as pool:
            list(pool.map(unit, [chunk[i * len(chunk) // units:(i + 1) * len(chunk) // units] for i in range(units)]))
        return time.time() - began

    return plain, spotbatch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--texts", type=int, default=2400)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--units", type=int, default=2)
    p.add_argument("--model", default="all-minilm-l6-v2")
    args = p.parse_args()
    from jobs.bench.common import cpu_env

    os.environ.update(cpu_env())
    from jobs.bench.embed import texts

    plain, spotbatch = runners(shared_feeder(args.model), args.units)
    corpus = texts(args.texts)
    plain(corpus[:64]), spotbatch(corpus[:64])  # both warm
    ratios = []
    for r in range(args.rounds):
        chunk = corpus[r * len(corpus) // args.rounds:(r + 1) * len(corpus) // args.rounds]
        took = {f.__name__: f(chunk) for f in ((plain, spotbatch) if r % 2 == 0 else (spotbatch, plain))}
        ratios.append(took["plain"] / took["spotbatch"])
        print(f"round {r + 1}: {len(chunk)} texts; plain LLM.embed {len(chunk) / took['plain']:.1f} texts/s, "
              f"spotbatch's path {len(chunk) / took['spotbatch']:.1f}: x{ratios[-1]:.3f}", flush=True)
    print(f"median x{statistics.median(ratios):.3f} over {args.rounds} rounds "
          f"(min x{min(ratios):.3f}, max x{max(ratios):.3f})")


if __name__ == "__main__":  # vLLM starts workers with spawn
    main()
