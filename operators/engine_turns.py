"""Units share an engine, except a unit suspected of killing it, which runs alone.

When an engine dies, every unit in it fails, and which one killed it is unknown. Counting the
failure against all of them would drag healthy neighbours to `engine_error` with one poison
unit. So a unit whose last attempt died in company runs its next attempt alone: it waits until
the units in the engine are done, and new ones wait for it. A death while alone is that unit's
own (pipelines/unit/protocol.py counts only those against compute.max_attempts).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Turn:
    """One unit's time in the engine; `company` is the most units that were in it together at
    any moment of that time (1: it was alone throughout)."""

    def __init__(self) -> None:
        self.company = 1


class EngineTurns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sharing: set[Turn] = set()  # units generating together now
        self._alone = False  # a unit has the engine to itself
        self._waiting_alone = 0  # units waiting for that; no new unit starts meanwhile

    @contextmanager
    def shared(self) -> Iterator[Turn]:
        turn = Turn()
        with self._cond:
            self._cond.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._sharing.add(turn)
            for other in self._sharing:
                other.company = max(other.company, len(self._sharing))
        try:
            yield turn
        finally:
            with self._cond:
                self._sharing.discard(turn)
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[Turn]:
        with self._cond:
            self._waiting_alone += 1
            self._cond.wait_for(lambda: not self._alone and not self._sharing)
            self._waiting_alone -= 1
            self._alone = True
        try:
            yield Turn()
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()
