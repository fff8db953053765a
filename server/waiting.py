"""The batches queued for the driver and not yet taken, with their expires_at. Each is taken once:
by its turn (the driver's thread), or, still waiting at its expires_at, by this watch's thread,
which hands it to `expire` (within a second), so a batch's window holds behind a long batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Waiting:
    def __init__(self, expire: Callable[[str, str], None]):
        self._expire = expire
        self._lock = threading.Lock()
        self._expires: dict[tuple[str, str], float] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="spotbatch-serve-expiry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()

    def add(self, tenant: str, batch_id: str, expires_at: float) -> None:
        with self._lock:
            self._expires[(tenant, batch_id)] = expires_at

    def take(self, tenant: str, batch_id: str) -> bool:
        """Whether the caller takes the batch (False: another took it already)."""
        with self._lock:
            return self._expires.pop((tenant, batch_id), None) is not None

    def _loop(self) -> None:
        while not self._halt.wait(1.0):
            with self._lock:
                due = [item for item, at in self._expires.items() if at <= time.time()]
            for tenant, batch_id in due:
                self._expire(tenant, batch_id)  # which takes it, or leaves it to its turn
