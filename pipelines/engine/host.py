"""A warm engine actor: the same EngineActor as a run's Ray Data stage, in an actor the driver
owns, so it outlives one run and serves the next without loading the model again
(pipelines/engine/warm_pool.py keeps them and releases them).

Each call carries its run's context, so a restarted actor (its node was lost) knows what to
serve: it loads the model afresh, under a new actor id, exactly as a restarted Ray Data actor
does. What happens to each unit is still pipelines/unit/protocol.py's.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from pipelines.engine.binding import RunRequest
from pipelines.stream.unit_rows import UNITS, read_units


class EngineHost:
    def __init__(self):
        self.created_at = time.time()  # the node-seconds of its first run count from here
        self.engine = None
        self.last_work_end: float | None = None  # when its last run's last unit was done
        self._bind = threading.Lock()
        self._calls = 0  # calls under way
        # Calls under way with a binding, by run: a call still waiting to be bound is not
        # counted, so a bind never waits on a call that itself waits for the bind.
        self._bound: Counter[str] = Counter()
        self._count = threading.Condition()

    def run_units(self, context: dict[str, Any], descriptors: list[dict[str, Any]]) -> pa.Table:
        """Read, generate and commit these units of the run `context` names (EngineActor's
        arguments, and the spec the rows are read by); returns one summary row per unit."""
        run_id = context["run_id"]
        bound = None
        with self._count:
            self._calls += 1
        try:
            # the units are read while a new engine loads its model (in _serve), not after
            with ThreadPoolExecutor(1) as reader:
                reading = reader.submit(read_units, pa.table({UNITS: [descriptors]}), context["read_spec_data"],
                                        run_id)
                bound = self._serve(context)
                rows = reading.result()
            return self.engine.serve(rows, bound)
        finally:
            with self._count:
                self._calls -= 1
                if bound is not None:
                    self._bound[run_id] -= 1
                    if not self._bound[run_id]:
                        del self._bound[run_id]
                if not self._calls:
                    self.last_work_end = time.time()
                self._count.notify_all()

    def _serve(self, context: dict[str, Any]):
        """The binding this call's units run with: the engine made for this run, or bound to
        it once every call of the run it served before has ended (finished, or stopped by its
        run's stop record), so an engine never serves two runs at once."""
        context = {k: v for k, v in context.items() if k != "read_spec_data"}
        run_id = context["run_id"]
        with self._bind:
            if self.engine is None:
                from pipelines.engine.actor import EngineActor

                self.engine = EngineActor(**context, started_at=self.created_at, quiet_on_stop=False)
            elif self.engine.run_id != run_id:
                with self._count:
                    self._count.wait_for(lambda: not self._bound)
                now = time.time()
                since = self.last_work_end or now
                self.engine.bind(RunRequest.of(context), started_at=since, loaded_at=since,
                                    warm={"idle_seconds": now - since, "actor_created_at": self.created_at})
            with self._count:
                self._bound[run_id] += 1
            return self.engine.bound

    def identity(self) -> dict[str, Any]:
        """Who serves: its actor id in the records of the run it serves now (the pool records
        its release there), and whether a model is loaded."""
        e = self.engine
        return {"actor_id": e.actor_id if e else None, "engine_id": e.engine_id if e else None,
                "loaded": e is not None, "loaded_dtype": e.loaded if e else None,
                "last_work_end": self.last_work_end}
