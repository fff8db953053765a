"""The feeder's admission counts KV the way a paged engine holds it: whole blocks, and a prompt's
shared prefix once. A fake engine that keeps KV as vLLM does (fine for batching logic; the
real engine's figures come from `spotbatch bench --sets shared_system`)."""

import random
import threading
import time

from operators.batching import Request
from operators.engine import Completion
from operators.feeder import EngineFeeder

BLOCK = 128  # vLLM's block on CPU
SAMPLING = {"max_tokens": 48, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []}


class PagedEngine:
    """KV in blocks of BLOCK tokens; a prompt's full blocks before its last token are shared by
    every running request with the same tokens up to them (vLLM's prefix cache), the rest is a
    request's own and grows a token a step. Records the most blocks it needed at once."""

    prefix_block_tokens = BLOCK

    def __init__(self, capacity_blocks: int):
        self.capacity_blocks = capacity_blocks
        self.running: dict[str, list] = {}  # id -> [prefixes it shares, prompt length, made, max_tokens]
        self.peak_blocks = 0
        self.peak_running = 0
        self.may_step = threading.Event()
        self.may_step.set()
        self.stepping = threading.Event()  # the feeder has admitted what it will and steps

    def kv_capacity_tokens(self):
        return self.capacity_blocks * BLOCK

    def add(self, request_id, token_ids, sampling):
        full = (len(token_ids) - 1) // BLOCK
        prefixes = {tuple(token_ids[:(k + 1) * BLOCK]) for k in range(full)}
        self.running[request_id] = [prefixes, len(token_ids), 0, sampling["max_tokens"]]
        self.peak_running = max(self.peak_running, len(self.running))

    def abort(self, request_ids):
        for rid in request_ids:
            self.running.pop(rid, None)

    def blocks_held(self) -> int:
        shared = set().union(*(r[0] for r in self.running.values())) if self.running else set()
        own = sum(-(-(length - len(prefixes) * BLOCK + made) // BLOCK)
                  for prefixes, length, made, _ in self.running.values())
        return len(shared) + own

    def step(self):
        self.stepping.set()
        self.may_step.wait()
        done = []
        for state in list(self.running.values()):
            state[2] += 1  # every running request makes its next token and holds its KV
        self.peak_blocks = max(self.peak_blocks, self.blocks_held())
        for rid, state in list(self.running.items()):
            if state[2] >= state[3]:
                del self.running[rid]
                done.append((rid, Completion("ok", state[1], state[2], "length")))
        time.sleep(0.0005)
        return done


def shared_system_requests(n: int, prefix_tokens: int = 560, question_tokens: int = 40) -> list[Request]:
    """The bench's shared-system set in token ids: one system prompt, then a question each."""
    rng = random.Random(3)
    system = [rng.randrange(1000, 50_000) for _ in range(prefix_tokens)]
    return [Request(i, system + [rng.randrange(1000, 50_000) for _ in range(question_tokens)], 48)
            for i in range(n)]


def admitted_at_once(engine: PagedEngine, requests: list[Request]) -> int:
    """Requests in the engine before its first step ends: everything the budget let in."""
    engine.may_step.clear()
    feeder = EngineFeeder(engine)
    futures = feeder.submit(requests, SAMPLING)
    assert engine.stepping.wait(5)
    at_once = len(engine.running)
    engine.may_step.set()
    assert all(f.result(timeout=30).completion_tokens == 48 for f in futures)
    return at_once


def test_requests_sharing_a_system_prompt_all_go_in_where_the_kv_holds_them_shared():
    """320 requests after one 560-token system prompt (600 tokens each, 48 new): shared, they hold
    4 blocks once and 2 of their own each, 644 blocks. Counted once per request (648 tokens each),
    the budget let in 254 of them: a shorter running set than the KV allows."""
    requests = shared_system_requests(320)
    engine = PagedEngine(capacity_blocks=4 + 320 * 2)
    assert admitted_at_once(engine, requests) == 320
    assert engine.peak_blocks <= engine.capacity_blocks  # and all of them ran to max_tokens without preempting


def test_where_the_kv_cannot_hold_them_all_it_holds_as_many_as_fit_and_never_more():
    """A KV cache of 300 blocks: 4 shared and 2 each fit 148 requests at their worst (every one
    making max_tokens). More would have the engine preempt (drop a request's KV and compute it
    again later); fewer leave it short of work."""
    requests = shared_system_requests(320)
    engine = PagedEngine(capacity_blocks=300)
    assert admitted_at_once(engine, requests) == 148
    assert engine.peak_blocks <= engine.capacity_blocks
    assert engine.peak_running == 148
