"""How a run is asked to stop early, and hears of it: a budget, a deadline, `spotbatch cancel`,
or an interrupt.

Every stop is the same: a stop record for the run (pipelines/store/records.py) that its engine
actors read before each unit they take. So the run takes no new unit, commits the units in
flight, and ends; the same command resumes. The driver watches the record too, since a cancel
comes from another process (a terminal, a Ray job, a notebook), and keeps time for the deadline.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pipelines.store.output import OutputStore
from pipelines.store.records import Records

log = logging.getLogger("spotbatch.run")

BUDGET, CANCELLED, DEADLINE = "budget", "cancelled", "deadline"
RESUMABLE_STOPS = (CANCELLED, DEADLINE)  # exit 4; the budget's is 3
POLL_SECONDS = 2.0  # how often the driver reads its stop record (one small GET)


class StopFlag:
    """A run's stop record as seen from a process that asks often (every unit an actor is
    handed, every block the read stage is given): read at most every `ttl` seconds, and once
    seen, never read again (a stop is not taken back). A storage fault reads as no stop."""

    def __init__(self, records: Records, run_id: str, ttl: float = 1.0):
        self.records, self.run_id, self.ttl = records, run_id, ttl
        self._reason: str | None = None
        self._read_at = float("-inf")

    def reason(self) -> str | None:
        if self._reason is None and time.monotonic() - self._read_at >= self.ttl:
            self._read_at = time.monotonic()
            try:
                self._reason = self.records.stop_requested(self.run_id)
            except Exception:  # the uncached read before each claim (pipelines/unit/protocol.py) decides
                pass
        return self._reason


_FLAGS: dict[tuple[str, str], StopFlag] = {}


def run_stop(output: str, storage_options: dict, run_id: str) -> str | None:
    """Whether run `run_id` on `output` was asked to stop, through this process's StopFlag."""
    key = (output, run_id)
    if key not in _FLAGS:
        _FLAGS[key] = StopFlag(Records(OutputStore(output, storage_options)), run_id)
    return _FLAGS[key].reason()


def cancel(output: str, storage_options: dict | None = None) -> list[str]:
    """Ask every run working on `output` to stop; returns their ids (none: nothing was running).

    A run is working while its record has no end. A driver killed without one is asked too,
    which is harmless: its actors are gone, and its successor gets a new id."""
    store = OutputStore(output, storage_options)
    store.require_manifest()
    records = Records(store)
    live = sorted(r for r, record in records.live_runs().items() if record.get("ended_at") is None)
    for run_id in live:
        records.request_stop(run_id, CANCELLED)
    return live


class StopWatch:
    """The driver's side of a stop: reads the stop record every POLL_SECONDS, checks the
    deadline, and turns the first interrupt (Ctrl-C, a notebook's stop button) into a cancel.
    `stop(reason)` is what the monitor calls; `on_stop(reason)` is told once."""

    def __init__(self, records: Records, run_id: str, on_stop: Callable[[str], None],
                 deadline: Callable[[], bool] | None = None):
        self.records = records
        self.run_id = run_id
        self.on_stop = on_stop
        self.deadline = deadline or (lambda: False)  # true once the next unit would end past it
        self.reason: str | None = None
        self._interrupts = 0  # counted in the handler itself: the stop it starts runs on a thread
        self._lock = threading.Lock()
        self._done = threading.Event()

    def stop(self, reason: str, write: bool = True) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        if write:
            self.records.request_stop(self.run_id, reason)
        self.on_stop(reason)

    def _poll(self) -> None:
        while not self._done.wait(POLL_SECONDS):
            self._poll_once()

    def _interrupted(self, signum, frame) -> None:
        # Two interrupts that land while the main thread is inside a call (waiting on Ray) are
        # handled back to back, before the first one's thread has run: count them here.
        self._interrupts += 1
        if self.reason is not None or self._interrupts > 1:
            raise KeyboardInterrupt  # a second interrupt: abandon the units in flight
        log.warning("\ninterrupted: taking no new unit and committing the units in flight "
                    "(interrupt again to abandon them; the same command resumes)")
        threading.Thread(target=self.stop, args=(CANCELLED,), daemon=True).start()  # not in a signal handler

    @contextmanager
    def watching(self) -> Iterator[StopWatch]:
        thread = threading.Thread(target=self._poll, name="spotbatch-stop-watch", daemon=True)
        thread.start()
        previous = None
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            previous = signal.signal(signal.SIGINT, self._interrupted)
        try:
            yield self
        finally:
            self._done.set()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self._poll_once(deadline=False)  # a stop asked after the last poll: the run ends stopped all the same

    def _poll_once(self, deadline: bool = True) -> None:
        try:
            asked = self.records.stop_requested(self.run_id)
        except Exception:  # the storage failed a read: try again at the next poll
            asked = None
        if asked:
            self.stop(asked, write=False)
        elif deadline and self.deadline():
            self.stop(DEADLINE)


def describe_stop(reason: str) -> str:
    """What a stopped run's summary and status say about going on."""
    if reason == BUDGET:
        return f"stopped: {reason} (raise cost.max_cost_usd and re-run to go on)"
    if reason == DEADLINE:
        return f"stopped: {reason} (compute.deadline; re-run the same command to go on)"
    return f"stopped: {reason} (re-run the same command to resume)"

