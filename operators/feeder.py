"""Keep one engine saturated: requests from any number of callers, one loop that steps it.

A batch handed to `generate` runs until its slowest request ends, and the tail decodes alone
while nothing new is admitted. Here callers (one thread per work unit in hand) submit their
requests and wait on futures, while a single thread owns the engine: it admits pending
requests under a token budget, steps the engine, and hands each finished request back. The
next unit's requests are admitted as soon as there is room, so the engine's running set stays
full across unit boundaries.

Plain threads and futures, no Ray: the engine is anything with `add`, `step` and
`kv_capacity_tokens` (operators/engine.py), so batching is tested with a fake one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Protocol

from operators.batching import Request, admit
from operators.engine import Completion, RowRejected


# The default budget, in KV caches. A request's budget is its worst case (prompt + max_tokens)
# and most stop well short of max_tokens, so one KV cache of worst cases leaves the engine's
# running set small: measured on the benchmark's long-tail set (SmolLM2, 2 CPU cores), 20
# tokens per step at a budget of one KV cache against 44 for plain vLLM, 0.73 of its speed.
# What does not fit waits in the engine's own queue, first come first served, so our order holds.
OVERCOMMIT = 2


class EngineFailed(RuntimeError):
    """The engine as a whole failed (died, ran out of memory): no request in it can finish."""


class StepEngine(Protocol):
    def add(self, request_id: str, token_ids: list[int], sampling: dict[str, Any]) -> None: ...

    def step(self) -> list[tuple[str, Completion]]: ...

    def abort(self, request_ids: list[str]) -> None: ...

    def kv_capacity_tokens(self) -> int: ...


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    request: Request
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
        self._in_flight_tokens = 0
        self._waiting_tokens = 0  # budget tokens of submitted requests not yet in the engine
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
            raise EngineFailed(f"the engine did not start: {self._failed!r}") from self._failed
        self.token_budget = token_budget or OVERCOMMIT * self.engine.kv_capacity_tokens()

    def submit(self, requests: list[Request], sampling: dict[str, Any]) -> list[Future]:
        """Queue requests in the given order; each future gives a Completion, or raises
        RowRejected (this request only) or EngineFailed (the engine is gone)."""
        items = [_Item(r, {**sampling, **(r.sampling or {}), "max_tokens": r.max_tokens}, Future()) for r in requests]
        with self._cond:
            if self._failed is not None:
                raise EngineFailed(f"the engine failed earlier: {self._failed!r}") from self._failed
            self._pending.extend(items)
            self._waiting_tokens += sum(r.budget_tokens for r in requests)
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
            self._cond.wait_for(lambda: self._waiting_tokens < self.token_budget // 4 or self._failed is not None)

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
            n = admit([i.request.budget_tokens for i in self._pending], self._in_flight_tokens,
                      self.token_budget, engine_idle=not self._running)
            items = [self._pending.popleft() for _ in range(n)]
            if items:
                self._waiting_tokens -= sum(i.request.budget_tokens for i in items)
                self._cond.notify_all()  # units waiting for a hungry engine
            return items

    def _drop_cancelled(self) -> None:
        """Called with the lock held, on the loop thread."""
        kept = deque(i for i in self._pending if id(i.future) not in self._cancelled)
        self._waiting_tokens -= sum(i.request.budget_tokens for i in self._pending if id(i.future) in self._cancelled)
        self._pending = kept
        gone = [rid for rid, i in self._running.items() if id(i.future) in self._cancelled]
        if gone:
            self.engine.abort(gone)
        for rid in gone:
            item = self._running.pop(rid)
            self._in_flight_tokens -= item.request.budget_tokens
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
            item.future.set_exception(err)
            return
        if self.stats.first_added_at is None:
            self.stats.first_added_at = time.time()
        item.added = time.monotonic()
        self._running[request_id] = item
        self._in_flight_tokens += item.request.budget_tokens
        self.stats.max_running = max(self.stats.max_running, len(self._running))

    def _step(self) -> None:
        started = time.monotonic()
        finished = self.engine.step()
        self.stats.busy_seconds += time.monotonic() - started
        self.stats.steps += 1
        self.stats.last_step_at = time.time()
        for request_id, completion in finished:
            item = self._running.pop(request_id)
            with self._cond:
                self._in_flight_tokens -= item.request.budget_tokens
            self.stats.requests += 1
            self.stats.prompt_tokens += completion.prompt_tokens
            self.stats.completion_tokens += completion.completion_tokens
            self.stats.last_finished_at = time.time()
            now = time.monotonic()
            item.future.set_result(replace(completion, queued_s=round(item.added - item.submitted, 4),
                                           generate_s=round(now - item.added, 4)))

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
