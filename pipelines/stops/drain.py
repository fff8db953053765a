"""When a stopped run may leave Ray Data's stream without losing a unit in flight.

After a stop the engine actors take no new unit, but Ray Data still holds the run's remaining
units and would push each one through both stages only to have it skipped: minutes for a run
with tens of thousands left. The driver leaves the stream instead, once no unit of the run can
still be committed by an actor it cannot see:

- each engine actor of the run, once it has seen the stop and holds no unit, writes a quiet
  record saying how many units of the run went through its hands (pipelines/engine/actor.py). From
  then on it claims nothing: the claim reads the stop record afresh, after the unit is counted
  as held (pipelines/unit/protocol.py, step 1);
- the driver has received the summary row of every one of those units (so the run's summary
  counts each commit);
- an actor that wrote no quiet record and stopped beating is gone: its units go back to pending,
  as after any lost actor.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from pipelines.store.records import Records, is_fresh

CHECK_SECONDS = 1.0  # how often, after a stop, the driver reads the actors' records: more seldom in a large fleet


class StopDrain:
    """The driver's count of the units each actor held, and whether the stream may be left."""

    def __init__(self, records: Records, run_id: str, check_seconds: float | None = None):
        self.records, self.run_id = records, run_id
        self.check_seconds = check_seconds
        self.held: Counter[str] = Counter()
        self._checked_at = float("-inf")

    def seen(self, row: dict[str, Any]) -> None:
        if row.get("held"):
            self.held[row["actor_id"]] += 1

    def may_leave(self) -> bool:
        """Every live actor of the run is quiet, and every unit it held has reached us. Reads
        the records at most every `check_seconds` (CHECK_SECONDS); a storage fault reads as not yet."""
        if time.monotonic() - self._checked_at < (CHECK_SECONDS if self.check_seconds is None else self.check_seconds):
            return False
        self._checked_at = time.monotonic()
        try:
            quiet = self.records.quiet_actors(self.run_id)
            actors, beats = self.records.live_actors()
        except Exception:
            return False
        now = time.time()
        for actor_id, record in actors.items():
            if record.get("run_id") != self.run_id:
                continue
            if actor_id in quiet:
                if self.held[actor_id] < quiet[actor_id]:
                    return False  # a unit it committed is still on its way to us
                continue
            beat = beats.get(actor_id, {}).get("time", record.get("loaded_at") or record.get("started_at"))
            if is_fresh(beat, now, record.get("beat_seconds")):
                return False  # live, and not yet quiet: it may hold a unit
        return True
