"""Units another run's live actors hold: this run leaves them, waits for them, and takes back
those whose holder died or hung (pipelines/unit/protocol.py says how runs keep apart)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.store.records import STALL_SECONDS, Records


@dataclass(frozen=True)
class OtherRunsWait:
    """How long to wait for units another run's live actors hold."""

    stall: float = STALL_SECONDS
    """An actor silent this long is taken as hung (its units are orphaned)."""
    max_wait_seconds: float = 3600.0
    stopped: Callable[[], bool] = lambda: False
    """The wait ends early once this says the run was asked to stop."""
    poll_seconds: float = 1.0


def await_other_runs(records: Records, unit_ids: list[str], run_id: str,
                     wait: OtherRunsWait = OtherRunsWait()) -> tuple[set[str], set[str]]:
    """Wait, for at most `wait.max_wait_seconds` or until the run is asked to stop, for units this
    run left to live actors of another run. Returns (orphaned, held): units whose holder died
    or hung and are not committed (this run may take them), and units still held when the wait
    ended."""
    deadline = time.monotonic() + wait.max_wait_seconds
    waiting = set(unit_ids)
    while True:
        waiting -= records.store.committed_units()
        held = {u for u in waiting if records.held_elsewhere(u, run_id, wait.stall)}
        if not held or time.monotonic() >= deadline or wait.stopped():
            return waiting - held, held
        time.sleep(wait.poll_seconds)
