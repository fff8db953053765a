"""Keep one engine saturated: requests from any number of callers, one loop that steps it.

A batch handed to `generate` runs until its slowest request ends, and the tail decodes alone
while nothing new is admitted. Here callers (one thread per work unit in hand) submit their
requests and wait on futures, while a single thread owns the engine: it admits pending
requests under a token budget, steps the engine, and hands each finished request back. The
next unit's requests are admitted as soon as there is room, so the engine's running set stays
full across unit boundaries.

Plain threads and futures, no Ray: the engine is anything with `add`, `step`,
`kv_capacity_tokens` and `prefix_block_tokens` (operators/engine.py), so batching is tested
with a fake one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from operators.batching import Request, admit
from operators.engine import Completion, RowRejected
from operators.kv_blocks import KVBlocks, KVNeed
from operators.step_model import StepSums
from spotbatch.errors import (
    EngineFailed,  # noqa: F401 (its home; importable from here as before)
    EngineStartError,
)

# The default budget, in KV caches. A request counts its worst case as the engine would hold
# it (operators/kv_blocks.py: whole blocks, a prefix another request holds counted once, and
# every token max_tokens allows), so within one KV cache the engine never has to preempt: drop
# a running request's KV and compute it again. Twice the KV cache, counted per request without
# sharing, had been better than once (the long-tail set, 0.73 -> 0.92 of plain vLLM, with more
# units in flight too); counted as the engine holds it, the shared-system set ran (SmolLM2
# float32, 2 CPU cores, one process, 15,335 tokens) at 114.6 and 131.5 tokens/s with one KV
# cache (at most 124 requests, none preempted, 43,454 tokens computed) against 103.2 and 109.3
# with two (220 in, 124 preempted and computed again, 56,692 tokens), and plain vLLM's 101.6;
# the long-tail set 127.0 with one against 125.6 with two (29 preempted).
BUDGET_KV_CACHES = 1
SHARE_BINS = 20


class StepEngine(Protocol):
    def add(self, request_id: str, token_ids: list[int], sampling: dict[str, Any]) -> None: ...

    def step(self) -> list[tuple[str, Completion]]: ...

    def abort(self, request_ids: list[str]) -> None: ...

    def kv_capacity_tokens(self) -> int: ...

    @property
    def prefix_block_tokens(self) -> int: ...

    # optional: `max_num_seqs`, the sequences the engine runs in one step at most (VLLMEngine's)


@dataclass
class FeederStats:
    """What the engine did, for the ledger and the benchmark (wall-clock times)."""

    first_added_at: float | None = None
    last_finished_at: float | None = None
    busy_seconds: float = 0.0  # time spent in engine steps with requests running
    steps: int = 0
    last_step_at: float | None = None  # wall clock: a beat carrying it says whether the engine moves
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_running: int = 0
    token_budget: int = 0
    max_kv_tokens: int = 0  # KV held at most, counted as the budget counts it (operators/kv_blocks.py)
    # each step's seconds against the requests running in it, for the estimate's step model
    # (operators/step_model.py): what batching does to the speed, which busy_seconds hides
    step_sums: StepSums = field(default_factory=StepSums)
    # requests by the share of their max_tokens they used, in SHARE_BINS bins: the spread of
    # output lengths the estimate simulates (a mean share alone makes every row end together)
    output_shares: list[int] = field(default_factory=lambda: [0] * SHARE_BINS)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    request: Request
    kv: KVNeed
    sampling: dict[str, Any]
    future: Future
    submitted: float = field(default_factory=time.monotonic)
    added: float | None = None  # when it entered the engine's running set


class EngineFeeder:
    """`engine` is an engine, or a function that builds one: then it is built on the feeder's
    own thread, the only thread that ever runs it. OpenMP gives every thread that starts
    parallel work a team of its own; a second team on the same cores makes libgomp count the
    CPUs as oversubscribed and stop spinning between operations, and each of the engine's
    thousands of small operations per step then waits for a sleeping thread to wake. Measured
    on 2 cores: stepping on a thread other than the one that built the engine, 0.85 of the speed."""

    def __init__(self, engine: StepEngine | Callable[[], StepEngine], token_budget: int | None = None):
        self.stats = FeederStats()
        self._cond = threading.Condition()
        self._pending: deque[_Item] = deque()
        self._running: dict[str, _Item] = {}
        self._prefill_tokens = 0  # prompt tokens added since the last step (the loop thread's)
        self._failed: BaseException | None = None
        self._cancelled: set[int] = set()  # id() of futures whose callers gave up on them
        self._ids = itertools.count()
        self._ready = threading.Event()
        self._gate = threading.Lock()  # held by the one unit between its hunger check and its submit
        self._gate_owner: int | None = None
        self.engine: StepEngine = engine if not callable(engine) else None  # type: ignore[assignment]
        threading.Thread(target=self._run, args=(engine,), daemon=True, name="engine-feeder").start()
        self._ready.wait()
        if self.engine is None:
            raise EngineStartError(repr(self._failed)) from self._failed
        self.token_budget = token_budget or BUDGET_KV_CACHES * self.engine.kv_capacity_tokens()
        self.stats.token_budget = self.token_budget
        self._block_tokens = self.engine.prefix_block_tokens
        # The budget admits by KV alone, so the engine may hold more sequences than it runs in a
        # step (vLLM queues those beyond max_num_seqs): a step's b is the running ones only.
        self._max_seqs: int | None = getattr(self.engine, "max_num_seqs", None)
        self._held = KVBlocks(self._block_tokens)  # what the engine holds (the loop thread's)
        self._waiting = KVBlocks(self._block_tokens)  # what was submitted and waits for it

    def submit(self, requests: list[Request], sampling: dict[str, Any]) -> list[Future]:
        """Queue requests in the given order; each future gives a Completion, or raises
        RowRejected (this request only) or EngineFailed (the engine is gone)."""
        items = [_Item(r, r.kv_need(self._block_tokens), {**sampling, **(r.sampling or {}), "max_tokens": r.max_tokens},
                       Future()) for r in requests]
        with self._cond:
            if self._failed is not None:
                raise EngineFailed(f"the engine failed earlier: {self._failed!r}") from self._failed
            self._pending.extend(items)
            for item in items:
                self._waiting.add(item.kv)
            self._cond.notify_all()
        self.release_turn()
        return [i.future for i in items]

    def cancel(self, futures: list[Future]) -> None:
        """Drop requests whose caller gave up (a timeout): they leave the queue, or the engine."""
        with self._cond:
            self._cancelled.update(id(f) for f in futures if not f.done())
            self._cond.notify()

    def wait_until_hungry(self) -> None:
        """Block until the engine could use more work: what waits for it is under a quarter of
        its budget. Units start generating only then, so a unit that waits here has spent no
        engine time, and a lost node loses only the units the engine had started.

        One unit passes at a time: it holds its turn until it submits (or `release_turn`), so
        units waiting together do not all see the same hungry engine and all start."""
        self._gate.acquire()
        self._gate_owner = threading.get_ident()
        with self._cond:
            self._cond.wait_for(lambda: self._waiting.tokens < self.token_budget // 4 or self._failed is not None)

    def release_turn(self) -> None:
        """Let the next waiting unit check for hunger; a no-op for a thread without the turn."""
        if self._gate_owner == threading.get_ident():
            self._gate_owner = None
            self._gate.release()

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + len(self._running)

    def _take_admitted(self) -> list[_Item]:
        with self._cond:
            while not self._pending and not self._running:
                self._cond.wait()
            if self._cancelled:
                self._drop_cancelled()
            n = admit((i.kv for i in self._pending), self._held, self.token_budget, engine_idle=not self._running)
            items = [self._pending.popleft() for _ in range(n)]
            for item in items:
                self._waiting.remove(item.kv)
            if items:
                self.stats.max_kv_tokens = max(self.stats.max_kv_tokens, self._held.tokens)
                self._cond.notify_all()  # units waiting for a hungry engine
            return items

    def _drop_cancelled(self) -> None:
        """Called with the lock held, on the loop thread."""
        kept = deque(i for i in self._pending if id(i.future) not in self._cancelled)
        for item in self._pending:
            if id(item.future) in self._cancelled:
                self._waiting.remove(item.kv)
        self._pending = kept
        gone = [rid for rid, i in self._running.items() if id(i.future) in self._cancelled]
        if gone:
            self.engine.abort(gone)
        for rid in gone:
            item = self._running.pop(rid)
            self._held.remove(item.kv)
            item.future.cancel()
        self._cancelled.clear()

    def _run(self, engine: StepEngine | Callable[[], StepEngine]) -> None:
        try:
            if self.engine is None:
                self.engine = engine()  # type: ignore[operator]
        except BaseException as err:
            self._failed = err
            return
        finally:
            self._ready.set()
        self._loop()

    def _loop(self) -> None:
        try:
            while True:
                for item in self._take_admitted():
                    self._add(item)
                if self._running:
                    self._step()
        except BaseException as err:  # the engine is unusable: fail every caller now, never hang
            self._fail_all(err)

    def _add(self, item: _Item) -> None:
        request_id = str(next(self._ids))
        try:
            self.engine.add(request_id, item.request.token_ids, item.sampling)
        except RowRejected as err:
            self._held.remove(item.kv)  # admitted, but never in the engine
            item.future.set_exception(err)
            return
        if self.stats.first_added_at is None:
            self.stats.first_added_at = time.time()
        item.added = time.monotonic()
        self._running[request_id] = item
        self._prefill_tokens += len(item.request.token_ids)  # computed by the next step (its prefill)
        self.stats.max_running = max(self.stats.max_running, len(self._running))

    def _step(self) -> None:
        started, running = time.monotonic(), self._running_sequences()
        finished = self.engine.step()
        took = time.monotonic() - started
        self.stats.busy_seconds += took
        self.stats.step_sums.add(running, took, self._prefill_tokens)
        self._prefill_tokens = 0
        self.stats.steps += 1
        self.stats.last_step_at = time.time()
        for request_id, completion in finished:
            item = self._running.pop(request_id)
            self._held.remove(item.kv)
            now = time.monotonic()
            # Its caller has its answer before any figure is counted: an error counting (the loop then
            # fails the requests still running) never leaves a request out of the engine and unanswered.
            item.future.set_result(replace(completion, queued_s=round(item.added - item.submitted, 4),
                                           generate_s=round(now - item.added, 4)))
            self._count_finished(item, completion)

    def _count_finished(self, item: _Item, completion: Completion) -> None:
        self.stats.requests += 1
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        allowed = item.request.max_tokens * item.request.n
        if allowed > 0:
            self.stats.output_shares[min(SHARE_BINS - 1, SHARE_BINS * completion.completion_tokens // allowed)] += 1
        self.stats.last_finished_at = time.time()

    def _running_sequences(self) -> int:
        """The sequences the engine runs in its next step: each request's choices (vLLM runs a
        request with n choices as n sequences), at most its max_num_seqs."""
        sequences = sum(item.request.n for item in self._running.values())
        return sequences if self._max_seqs is None else min(sequences, self._max_seqs)

    def _fail_all(self, err: BaseException) -> None:
        with self._cond:
            self._failed = err
            self._cond.notify_all()
            items = list(self._running.values()) + list(self._pending)
            self._running.clear()
            self._pending.clear()
        failure = EngineFailed(f"the engine failed: {err!r}")
        failure.__cause__ = err
        for item in items:
            if not item.future.done():
                item.future.set_exception(failure)
