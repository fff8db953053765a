"""The records a run keeps beside its results, one small JSON file each, never one per row.

    _spotbatch/attempts/<unit>/<attempt>.start.json, .end.json
        every attempt at a unit, numbered 000000, 000001, ...: which actor, when, and how it
        ended; an attempt with no end was lost with its node or driver. The start record is
        created exclusively, so it is also the claim on the unit (pipelines/unit/protocol.py)
    _spotbatch/actors/<actor>.json, <actor>.beat.json
        an engine actor: its node, instance type, market and price, when it started and when
        its model was loaded; the beat is rewritten every few seconds while it lives
    _spotbatch/runs/<run>.json
        one invocation of `spotbatch run`: when it started and ended, and why it stopped
    _spotbatch/stop/<run>.json
        asks the run's actors to take no new unit (the budget is spent)
    _spotbatch/loaded/<model>.json
        the dtype the run's first engine of that model loaded (`auto` differs by CPU and GPU):
        every later engine loads the same, so one output never mixes two
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pipelines.store.output import ACTORS, ATTEMPTS, FOLDED, LOADED, RUNS, STOP, OutputStore
from pipelines.store.record_types import AttemptOutcome, attempt_outcome

HEARTBEAT_SECONDS = 5.0  # how often a live actor rewrites its beat, in a fleet of up to BEATS_PER_SECOND * 5 actors
# A larger fleet beats less often, so an output's beats stay this many PUTs a second: 1,000
# actors beat every 50 s, not 200 PUT/s. What the beat promises holds at any period: an actor
# is live while its beat is under two of its periods old, and a lost actor's cost ends within
# one period after its last beat (the ledger errs by at most that, on the high side).
BEATS_PER_SECOND = 20.0


def beat_seconds(actors: int) -> float:
    """How often each of a fleet of `actors` engine actors beats.

    >>> beat_seconds(4), beat_seconds(1000)
    (5.0, 50.0)
    """
    return max(HEARTBEAT_SECONDS, actors / BEATS_PER_SECOND)
# An engine that makes no step for this long while it holds a unit is hung, unless
# compute.request_timeout_seconds says how long a request may take.
STALL_SECONDS = 1800.0


def is_fresh(beat_time: float | None, now: float, period: float | None = None) -> bool:
    """A beat from a live actor: at most two of its periods old, and not dated ahead of us by
    more than one (a clock that runs ahead must not keep a dead actor's units held)."""
    period = period or HEARTBEAT_SECONDS
    return beat_time is not None and -period <= now - beat_time <= 2 * period


def new_id() -> str:
    """Sortable by time, unique across machines."""
    return f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"


NEXT_ATTEMPT = "next.json"  # beside a unit's folded attempts: the number its next attempt takes
# In a committed unit's footer: the attempt that committed it, and when.
COMMITTED_BY, COMMITTED_AT = "attempt", "committed_at"


def _dumps(record: Any) -> bytes:
    """A record's file: a typed one (pipelines/store/record_types.py) or a plain dict."""
    return json.dumps(record.to_json() if hasattr(record, "to_json") else record).encode()


class Records:
    def __init__(self, store: OutputStore):
        self.store = store
        self.next_number: dict[str, int] = {}  # unit -> first attempt number free after folding
        self._archives: dict[str, dict[str, Any]] = {}  # folded archives read so far (written once, never changed)

    def _json(self, name: str) -> Any:
        data = self.store.read(name)
        return None if data is None else json.loads(data)

    # -- the model as loaded ----------------------------------------------------------------
    def loaded_dtype(self, model: str) -> str | None:
        record = self._json(f"{LOADED}/{model}.json")
        return None if record is None else record["dtype"]

    def pin_loaded_dtype(self, model: str, dtype: str, actor_id: str) -> str:
        """Record the dtype an engine loaded, unless one is recorded; returns the recorded one."""
        try:
            self.store.create(f"{LOADED}/{model}.json",
                              json.dumps({"dtype": dtype, "actor_id": actor_id, "time": time.time()}).encode())
            return dtype
        except FileExistsError:
            return self.loaded_dtype(model) or dtype

    # -- attempts -------------------------------------------------------------------------
    def claim_attempt(self, unit_id: str, attempts: dict[str, dict[str, Any]], info: dict[str, Any]) -> str | None:
        """Start the next attempt at a unit, given the attempts seen at it (`unit_attempts`):
        its start record is created under the next attempt number, exclusively. None when
        another actor created that number first: it claimed the unit since our look."""
        attempt = f"{self.next_attempt_number(unit_id, attempts):06d}"
        try:
            self.store.create(f"{ATTEMPTS}/{unit_id}/{attempt}.start.json", _dumps(info))
        except FileExistsError:
            return None
        return attempt

    def next_attempt_number(self, unit_id: str, attempts: dict[str, dict[str, Any]]) -> int:
        """After every attempt seen (older id styles too), and every one folded away."""
        numbers = [int(a) + 1 for a in attempts if a.isdigit()]
        return max([len(attempts), self.next_number.get(unit_id, 0), *numbers])

    def end_attempt(self, unit_id: str, attempt: str, outcome: dict[str, Any]) -> None:
        self.store.create(f"{ATTEMPTS}/{unit_id}/{attempt}.end.json", _dumps(outcome))

    def attempts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """unit -> attempt -> {"start": {...}, "end": {...} or absent}, folded ones included."""
        result = self.live_attempts()
        for archive in self.folded():
            for unit_id, tries in archive["attempts"].items():
                mine = result.setdefault(unit_id, {})
                for attempt, record in tries.items():
                    mine.setdefault(attempt, record)  # a fold cut short leaves both: the same record
        return result

    def settled_attempts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """attempts(), where an attempt that committed its unit but died before its end record
        was written (its node or driver was killed in between) ends as its commit says: the
        unit's footer names the attempt that committed it. Only units committed with no
        attempt ending so have their footer read."""
        result = self.attempts()
        for unit_id in sorted(self.store.committed_units()):
            tries = result.get(unit_id, {})
            if any(attempt_outcome(t) is AttemptOutcome.COMMITTED for t in tries.values()):
                continue
            if not any("end" not in t for t in tries.values()):
                continue
            stats = self.store.unit_stats(unit_id)
            attempt = tries.get(stats.get(COMMITTED_BY))
            if attempt is not None and "end" not in attempt and "start" in attempt:
                attempt["end"] = {**{k: v for k, v in stats.items() if k not in (COMMITTED_BY, COMMITTED_AT)},
                                  "outcome": AttemptOutcome.COMMITTED, "time": stats[COMMITTED_AT], "from_footer": True}
        return result

    def live_attempts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The attempt records as files now, without the folded ones (pipelines/store/compact.py)."""
        return self._read_attempts(ATTEMPTS)

    def _read_attempts(self, folder: str) -> dict[str, dict[str, dict[str, Any]]]:
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for name, data in self.store.read_many(self.store.find(folder)).items():
            unit_id, file = name[len(ATTEMPTS) + 1 :].split("/", 1)
            if file == NEXT_ATTEMPT:
                self.next_number[unit_id] = json.loads(data)["next"]
                continue
            attempt, kind, _ = file.rsplit(".", 2)
            result.setdefault(unit_id, {}).setdefault(attempt, {})[kind] = json.loads(data)
        return result

    def folded(self) -> list[dict[str, Any]]:
        """The archives compaction wrote (pipelines/store/compact.py). Each is read once: the
        ledger asks for attempts, actors and runs, and only a listing is repeated."""
        names = self.store.find(FOLDED)
        self._archives.update({n: json.loads(d) for n, d in
                               self.store.read_many([n for n in names if n not in self._archives]).items()})
        return [self._archives[n] for n in sorted(names) if n in self._archives]

    def unit_attempts(self, unit_id: str) -> dict[str, dict[str, Any]]:
        """attempt -> {"start": {...}, "end": {...} or absent}, for one unit."""
        return self._read_attempts(f"{ATTEMPTS}/{unit_id}").get(unit_id, {})

    def held_elsewhere(self, unit_id: str, run_id: str, stall_seconds: float = STALL_SECONDS) -> bool:
        """Whether a live actor of another run is generating this unit now."""
        return self.open_elsewhere(self.unit_attempts(unit_id), run_id, stall_seconds)

    def open_elsewhere(self, attempts: dict[str, dict[str, Any]], run_id: str,
                       stall_seconds: float = STALL_SECONDS, now: float | None = None) -> bool:
        """Whether one of a unit's attempts is open (no end) and held by a live actor of
        another run whose engine moves. Our own run's open attempt is one whose actor was lost:
        Ray gives the unit to us again only then. An actor that beats while its engine has made
        no step for `stall_seconds` since the attempt began is hung: it holds nothing."""
        now = time.time() if now is None else now
        for attempt in attempts.values():
            start = attempt.get("start")
            if start is None or "end" in attempt or start.get("run_id") == run_id:
                continue
            beat = self._json(f"{ACTORS}/{start.get('actor_id')}.beat.json") or {}
            if not is_fresh(beat.get("time"), now, beat.get("period")):
                continue
            moved = max((beat.get("engine") or {}).get("last_step_at") or 0.0, start.get("time", 0.0))
            if beat["time"] - moved <= stall_seconds:
                return True
        return False

    # -- actors ---------------------------------------------------------------------------
    def actor_started(self, actor_id: str, info: dict[str, Any]) -> None:
        self.store.create(f"{ACTORS}/{actor_id}.json", _dumps(info))

    def actor_beat(self, actor_id: str, info: dict[str, Any]) -> None:
        self.store.put(f"{ACTORS}/{actor_id}.beat.json", _dumps(info))

    def actors(self) -> dict[str, dict[str, Any]]:
        """actor -> its start record, with "last_seen" from its latest beat."""
        result, beats = self.live_actors()
        for archive in self.folded():
            for actor_id, (record, beat) in archive["actors"].items():
                result.setdefault(actor_id, record)
                if beat is not None:
                    beats.setdefault(actor_id, beat)
        for actor_id, record in result.items():
            beat = beats.get(actor_id, {})
            record["last_seen"] = beat.get("time", record.get("loaded_at") or record["started_at"])
            if "warm_until" in beat:  # a warm engine released after its last run (pipelines/engine/warm_pool.py)
                record["warm_until"] = beat["warm_until"]
            for name in ("storage_requests", "engine"):  # its S3 requests and its engine's figures so far
                if name in beat:
                    record[name] = beat[name]
        return result

    def last_beat(self, actor_id: str) -> dict[str, Any] | None:
        return self._json(f"{ACTORS}/{actor_id}.beat.json")

    def live_actors(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The actor records and beats as files now, without the folded ones."""
        result: dict[str, dict[str, Any]] = {}
        beats: dict[str, dict[str, Any]] = {}
        for name, data in self.store.read_many(self.store.find(ACTORS)).items():
            file = name.rsplit("/", 1)[-1]
            if file.endswith(".beat.json"):
                beats[file[: -len(".beat.json")]] = json.loads(data)
            else:
                result[file[: -len(".json")]] = json.loads(data)
        return result, beats

    # -- runs and stops -------------------------------------------------------------------
    def run_record(self, run_id: str, info: dict[str, Any]) -> None:
        self.store.put(f"{RUNS}/{run_id}.json", _dumps(info))

    def runs(self) -> dict[str, dict[str, Any]]:
        """run -> its record, folded ones included."""
        result = self.live_runs()
        for archive in self.folded():
            for run_id, record in archive["runs"].items():
                result.setdefault(run_id, record)
        return result

    def live_runs(self) -> dict[str, dict[str, Any]]:
        """The run records as files now, without the folded ones."""
        files = self.store.read_many(self.store.find(RUNS))
        return {n.rsplit("/", 1)[-1][: -len(".json")]: json.loads(d) for n, d in files.items()}

    def request_stop(self, run_id: str, reason: str) -> None:
        self.store.put(f"{STOP}/{run_id}.json", json.dumps({"reason": reason, "time": time.time()}).encode())

    def actor_quiet(self, run_id: str, actor_id: str, held: int) -> None:
        """Actor `actor_id` has seen run `run_id`'s stop and holds no unit of it: it will claim
        none (pipelines/stops/drain.py); `held` units of the run went through its hands."""
        self.store.put(f"{STOP}/{run_id}.quiet/{actor_id}.json",
                       json.dumps({"held": held, "time": time.time()}).encode())

    def quiet_actors(self, run_id: str) -> dict[str, int]:
        """actor -> how many units of run `run_id` it held, for the actors quiet since its stop."""
        files = self.store.read_many(self.store.find(f"{STOP}/{run_id}.quiet"))
        return {n.rsplit("/", 1)[-1][: -len(".json")]: json.loads(d)["held"] for n, d in files.items()}

    def stop_requested(self, run_id: str) -> str | None:
        record = self._json(f"{STOP}/{run_id}.json")
        return None if record is None else record["reason"]
