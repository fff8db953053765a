"""A run's controls for a caller in the same process (a background run's handle,
pipelines/background.py): ask it to stop, and read its progress.

A stop asked here is the run's StopWatch's (pipelines/stops/stopping.py), as `spotbatch cancel` is:
heard at once while the run watches, or as it starts watching when asked before. Asked after
the run ended, it does nothing. A controlled run shows no progress of its own: from a thread,
a notebook would print it into whichever cell runs then; the caller asks for the line.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from pipelines.stops.stopping import CANCELLED

if TYPE_CHECKING:
    from pipelines.progress import RunMonitor
    from pipelines.stops.stopping import StopWatch


class RunControl:
    def __init__(self):
        self._lock = threading.Lock()
        self._watch: StopWatch | None = None
        self._monitor: RunMonitor | None = None
        self._ended = False
        self.asked = False

    def stop(self) -> None:
        with self._lock:
            self.asked = True
            watch = None if self._ended else self._watch
        if watch is not None:
            watch.stop(CANCELLED)

    def attach(self, watch: StopWatch, monitor: RunMonitor | None = None) -> None:
        with self._lock:
            self._watch, self._monitor = watch, monitor
            asked = self.asked
        if asked:
            watch.stop(CANCELLED)

    def detach(self) -> None:
        with self._lock:
            self._ended = True

    def progress(self) -> str | None:
        """The run's progress line (rows, tokens/s, ETA, $), once it has units to run."""
        with self._lock:
            monitor = self._monitor
        return monitor.line() if monitor is not None else None
