"""One server per store: two servers on one store would both run its unfinished batches. A
server holds `server.lease` in the store while it serves, beating its heart into it every
BEAT_SECONDS; another server refuses to start while the lease is live. A lease whose heartbeat is
older than STALE_SECONDS (a server killed elsewhere), or whose process on this machine is gone
(one killed here), is taken over; every write is conditional, so two starting at once cannot
both win."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from pipelines.redact import redact_url
from server.state import State
from spotbatch.errors import SpecError

LEASE, BEAT_SECONDS, STALE_SECONDS = "server.lease", 10.0, 60.0


class Lease:
    def __init__(self, state: State):
        self.state, self.path = state, state.storage.path(LEASE)
        self.mine = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="spotbatch-serve-lease", daemon=True)

    def take(self) -> None:
        """Hold the store's lease, or raise SpecError naming the live server that holds it."""
        if self._thread.is_alive():
            return  # held already (serve() takes it before uvicorn starts, to fail with a clean error)
        storage, found = self.state.storage, self.state.storage.read_versioned(self.path)
        data = json.dumps({**self.mine, "heartbeat": time.time()}).encode()
        if found is None:
            try:
                storage.create(self.path, data, durable=True)
            except FileExistsError:
                found = storage.read_versioned(self.path)
        if found is not None:
            holder = json.loads(found[0])
            if not _stale(holder) or not storage.put_if_version(self.path, data, found[1]):
                ago = time.time() - holder["heartbeat"]
                raise SpecError(f"store {redact_url(self.state.url)} is served by another server (pid "
                                f"{holder['pid']} on {holder['host']}, heartbeat {ago:.0f} s ago): one server per "
                                f"store; stop it, or wait {STALE_SECONDS:.0f} s after it died")
        self._version = storage.read_versioned(self.path)[1]
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self.state.storage.delete(self.path)

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            data = json.dumps({**self.mine, "heartbeat": time.time()}).encode()
            if not self.state.storage.put_if_version(self.path, data, self._version):
                return  # taken over (this server was thought dead): the other one serves now
            self._version = self.state.storage.read_versioned(self.path)[1]


def _stale(holder: dict[str, Any]) -> bool:
    if time.time() - holder["heartbeat"] > STALE_SECONDS:
        return True
    return holder["host"] == socket.gethostname() and not _alive(holder["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
