"""The units an engine actor has in hand, and what its run's stop drain needs to know of them
(pipelines/stops/drain.py): how many each run's record held before the engine said it was quiet.
Several units are in hand at once, each on its own thread."""

from __future__ import annotations

import threading
from collections import Counter


class UnitsInHand:
    def __init__(self):
        self.count = 0  # units being generated or committed
        self.held: Counter[str] = Counter()  # actor record -> units of its run that were in hand
        self.quiet: set[str] = set()  # actor records that said they hold no unit after a stop
        self.draining = False  # a spot notice came: take no new unit
        self.idle = threading.Condition()

    def enter(self) -> bool:
        """Take a unit in hand; False (and nothing taken) when the node is draining."""
        with self.idle:
            if self.draining:
                return False
            self.count += 1
            return True

    def release(self, actor_id: str, ended: bool) -> bool:
        """A unit in hand has ended; returns whether it counts among the units this engine held
        for its run's stop drain: every unit that ended with a summary row (`ended`) before
        the engine said it was quiet, and none after, so the count it gave is exact."""
        with self.idle:
            self.count -= 1
            counted = ended and actor_id not in self.quiet
            if counted:
                self.held[actor_id] += 1
            self.idle.notify_all()
        return counted

    def wait_empty(self, timeout: float | None = None) -> None:
        with self.idle:
            self.idle.wait_for(lambda: self.count == 0, timeout=timeout)

    def go_quiet(self, actor_id: str) -> int:
        """Once nothing is in hand: count no more units for `actor_id`; returns those it held."""
        with self.idle:
            self.idle.wait_for(lambda: self.count == 0)
            self.quiet.add(actor_id)
            return self.held[actor_id]

    def give_up_one(self, timeout: float) -> None:
        """The unit of this thread ends with its engine: wait (at most `timeout`) for the
        others in hand to end too."""
        with self.idle:
            self.count -= 1
            self.idle.wait_for(lambda: self.count == 0, timeout=timeout)
