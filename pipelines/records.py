"""The records a run keeps beside its results, one small JSON file each, never one per row.

    _spotbatch/attempts/<unit>/<attempt>.start.json, .end.json
        every attempt at a unit: which actor, when, and how it ended; an attempt with no end
        was lost with its node or driver
    _spotbatch/actors/<actor>.json, <actor>.beat.json
        an engine actor: its node, instance type, market and price, when it started and when
        its model was loaded; the beat is rewritten every few seconds while it lives
    _spotbatch/runs/<run>.json
        one invocation of `spotbatch run`: when it started and ended, and why it stopped
    _spotbatch/stop/<run>.json
        asks the run's actors to take no new unit (the budget is spent)
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pipelines.output import ACTORS, ATTEMPTS, RUNS, STOP, OutputStore

HEARTBEAT_SECONDS = 5.0  # how often a live actor rewrites its beat


def new_id() -> str:
    """Sortable by time, unique across machines."""
    return f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"


class Records:
    def __init__(self, store: OutputStore):
        self.store = store

    def _json(self, name: str) -> Any:
        data = self.store.read(name)
        return None if data is None else json.loads(data)

    # -- attempts -------------------------------------------------------------------------
    def start_attempt(self, unit_id: str, info: dict[str, Any]) -> str:
        attempt = new_id()
        self.store.create(f"{ATTEMPTS}/{unit_id}/{attempt}.start.json", json.dumps(info).encode())
        return attempt

    def end_attempt(self, unit_id: str, attempt: str, outcome: dict[str, Any]) -> None:
        self.store.create(f"{ATTEMPTS}/{unit_id}/{attempt}.end.json", json.dumps(outcome).encode())

    def attempts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """unit -> attempt -> {"start": {...}, "end": {...} or absent}."""
        return self._read_attempts(ATTEMPTS)

    def _read_attempts(self, folder: str) -> dict[str, dict[str, dict[str, Any]]]:
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for name, data in self.store.read_many(self.store.find(folder)).items():
            unit_id, file = name[len(ATTEMPTS) + 1 :].split("/", 1)
            attempt, kind, _ = file.rsplit(".", 2)
            result.setdefault(unit_id, {}).setdefault(attempt, {})[kind] = json.loads(data)
        return result

    def unit_attempts(self, unit_id: str) -> dict[str, dict[str, Any]]:
        """attempt -> {"start": {...}, "end": {...} or absent}, for one unit."""
        return self._read_attempts(f"{ATTEMPTS}/{unit_id}").get(unit_id, {})

    def held_elsewhere(self, unit_id: str, run_id: str) -> bool:
        """Whether a live actor of another run is generating this unit now: an attempt with no
        end, whose actor still beats. One small listing per unit, and reads only of open attempts."""
        names = set(self.store.find(f"{ATTEMPTS}/{unit_id}"))
        for name in names:
            if not name.endswith(".start.json") or name.replace(".start.json", ".end.json") in names:
                continue
            start = self._json(name) or {}
            if start.get("run_id") == run_id:
                continue  # our own lost attempt: Ray is retrying it through us
            beat = self._json(f"{ACTORS}/{start.get('actor_id')}.beat.json") or {}
            if time.time() - beat.get("time", 0) <= 2 * HEARTBEAT_SECONDS:
                return True
        return False

    # -- actors ---------------------------------------------------------------------------
    def actor_started(self, actor_id: str, info: dict[str, Any]) -> None:
        self.store.create(f"{ACTORS}/{actor_id}.json", json.dumps(info).encode())

    def actor_beat(self, actor_id: str, info: dict[str, Any]) -> None:
        self.store.put(f"{ACTORS}/{actor_id}.beat.json", json.dumps(info).encode())

    def actors(self) -> dict[str, dict[str, Any]]:
        """actor -> its start record, with "last_seen" from its latest beat."""
        result: dict[str, dict[str, Any]] = {}
        beats: dict[str, dict[str, Any]] = {}
        for name, data in self.store.read_many(self.store.find(ACTORS)).items():
            file = name.rsplit("/", 1)[-1]
            if file.endswith(".beat.json"):
                beats[file[: -len(".beat.json")]] = json.loads(data)
            else:
                result[file[: -len(".json")]] = json.loads(data)
        for actor_id, record in result.items():
            record["last_seen"] = beats.get(actor_id, {}).get("time", record.get("loaded_at") or record["started_at"])
        return result

    # -- runs and stops -------------------------------------------------------------------
    def run_record(self, run_id: str, info: dict[str, Any]) -> None:
        self.store.put(f"{RUNS}/{run_id}.json", json.dumps(info).encode())

    def runs(self) -> dict[str, dict[str, Any]]:
        files = self.store.read_many(self.store.find(RUNS))
        return {n.rsplit("/", 1)[-1][: -len(".json")]: json.loads(d) for n, d in files.items()}

    def request_stop(self, run_id: str, reason: str) -> None:
        self.store.put(f"{STOP}/{run_id}.json", json.dumps({"reason": reason, "time": time.time()}).encode())

    def stop_requested(self, run_id: str) -> str | None:
        record = self._json(f"{STOP}/{run_id}.json")
        return None if record is None else record["reason"]
