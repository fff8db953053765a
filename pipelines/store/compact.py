"""`spotbatch compact OUTPUT`: keep an output's records from growing with every invocation.

Each run leaves a file per attempt, per actor (and its beat) and per run. Compaction folds the
records of runs that have ended into one archive, `_spotbatch/folded/<id>.json`, which every
reader (status, report, the ledger) reads with the files still there, so what they show is
unchanged; then it removes the folded files, and staging and `.tmp` files that no running
run can still be writing. Only attempts at committed units are folded: a pending unit's
attempts still count against its attempt limit. A folded unit keeps one small file saying
which attempt number comes next, so a later `--retry-failed` never reuses one.

Safe to run while another run works on the output: nothing of a run that has not ended is
touched, and a compaction cut short leaves records both folded and as files, which readers
take once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pipelines.store.output import ACTORS, ATTEMPTS, FOLDED, RUNS, STAGED, STAGING, OutputStore
from pipelines.store.records import NEXT_ATTEMPT, Records, new_id
from pipelines.store.storage.local_version import LOCK, NONCE

ORPHAN_GRACE_SECONDS = 3600.0  # a staging file this much older than every running run is an orphan


@dataclass
class Compaction:
    runs: int = 0
    actors: int = 0
    attempts: int = 0
    files_removed: int = 0
    orphans_removed: int = 0


def compact(store: OutputStore, now: float | None = None) -> Compaction:
    now = time.time() if now is None else now
    records = Records(store)
    runs = records.live_runs()
    ended = {r for r, rec in runs.items() if rec.get("ended_at") is not None}
    committed = store.committed_units()
    actors, beats = records.live_actors()
    done = Compaction()

    attempts: dict[str, dict[str, Any]] = {}
    for unit_id, tries in records.live_attempts().items():
        if unit_id in committed and all(t.get("start", {}).get("run_id") in ended for t in tries.values()):
            attempts[unit_id] = tries
    folded_actors = {a: (rec, beats.get(a)) for a, rec in actors.items() if rec.get("run_id") in ended}
    folding = Folding(attempts, folded_actors, {r: runs[r] for r in ended}, now)
    if attempts or folded_actors or ended:
        _fold(store, records, folding, done)
    done.orphans_removed = _remove_orphans(store, runs, ended, now)
    return done


@dataclass(frozen=True)
class Folding:
    """What one compaction folds: the ended runs' attempts at committed units, actors, runs."""
    attempts: dict[str, dict[str, Any]]
    actors: dict[str, tuple]
    runs: dict[str, dict]
    now: float

    def archive(self) -> dict[str, Any]:
        return {"folded_at": self.now, "attempts": self.attempts, "actors": self.actors, "runs": self.runs}


def _fold(store: OutputStore, records: Records, folding: Folding, done: Compaction) -> None:
    store.create(f"{FOLDED}/{new_id()}.json", json.dumps(folding.archive()).encode())  # first: nothing is ever lost
    files: list[str] = []
    for unit_id, tries in folding.attempts.items():
        next_number = records.next_attempt_number(unit_id, tries)
        store.put(f"{ATTEMPTS}/{unit_id}/{NEXT_ATTEMPT}", json.dumps({"next": next_number}).encode())
        files += [f"{ATTEMPTS}/{unit_id}/{a}.{kind}.json" for a, t in tries.items() for kind in t]
    for actor_id, (_, beat) in folding.actors.items():
        files.append(f"{ACTORS}/{actor_id}.json")
        if beat is not None:
            files.append(f"{ACTORS}/{actor_id}.beat.json")
    files += [f"{RUNS}/{r}.json" for r in folding.runs]
    for name in files:
        store.remove(name)
    done.runs, done.actors = len(folding.runs), len(folding.actors)
    done.attempts = sum(len(t) for t in folding.attempts.values())
    done.files_removed = len(files)


def _remove_orphans(store: OutputStore, runs: dict[str, dict], ended: set[str], now: float) -> int:
    """Staging files and records left half written by writers that died: older than every run
    still going (by an hour, for clocks that differ), or than now when none is."""
    running = [rec.get("started_at", now) for r, rec in runs.items() if r not in ended]
    before = min(running + [now]) - ORPHAN_GRACE_SECONDS
    removed = 0
    # what a killed writer left in staging (a staged commit); not a file's version nonce, which
    # its next merge compares, nor its lock, which a waiter may hold open (local_version.py)
    staging = [p for p in store.storage.find(store._path(STAGING)) if not p.endswith((NONCE, LOCK))]
    half_written = [p for p in store.storage.find(store._path("_spotbatch")) if p.endswith(STAGED)]
    for path in staging + half_written:
        modified = store.storage.modified(path)
        if modified is not None and modified < before:
            store.storage.delete(path)
            removed += 1
    return removed
