"""When a stopped run may leave Ray Data's stream (pipelines/stop_drain.py): only once every live
engine actor of the run has said it is quiet and every unit it held has reached the driver.
The end-to-end figure is `python -m jobs.bench.stop_latency`; tests/test_cancel.py runs it."""

import time

import pytest

import pipelines.stop_drain as stop_drain
from pipelines.stop_drain import StopDrain
from pipelines.store.output import OutputStore
from pipelines.store.records import Records


@pytest.fixture
def records(tmp_path, monkeypatch):
    monkeypatch.setattr(stop_drain, "CHECK_SECONDS", 0.0)
    store = OutputStore(str(tmp_path / "out"))
    store.create_manifest({"fingerprint": "f", "units": []})
    return Records(store)


def actor(records: Records, actor_id: str, run_id: str, beat_age: float) -> None:
    now = time.time()
    records.actor_started(actor_id, {"run_id": run_id, "beat_seconds": 5.0, "started_at": now - 100,
                                     "loaded_at": now - 90})
    records.actor_beat(actor_id, {"time": now - beat_age})


def row(actor_id: str, held: bool = True) -> dict:
    return {"actor_id": actor_id, "held": held}


def test_a_live_actor_that_is_not_quiet_keeps_the_driver_in_the_stream(records):
    actor(records, "a", "run", beat_age=1)
    drain = StopDrain(records, "run")
    assert not drain.may_leave()
    records.actor_quiet("run", "a", held=0)
    assert drain.may_leave()


def test_the_driver_stays_until_every_unit_a_quiet_actor_held_has_reached_it(records):
    actor(records, "a", "run", beat_age=1)
    records.actor_quiet("run", "a", held=2)
    drain = StopDrain(records, "run")
    drain.seen(row("a"))
    drain.seen(row("a", held=False))  # a unit skipped before it was in hand: not one of the two
    assert not drain.may_leave()
    drain.seen(row("a"))
    assert drain.may_leave()


def test_an_actor_that_stopped_beating_holds_nothing_and_other_runs_actors_do_not_count(records):
    actor(records, "gone", "run", beat_age=60)  # preempted: its units go back to pending
    actor(records, "other", "another-run", beat_age=1)  # a live actor of another run on the same output
    assert StopDrain(records, "run").may_leave()


def test_a_storage_fault_reads_as_not_yet(records, monkeypatch):
    actor(records, "a", "run", beat_age=1)
    records.actor_quiet("run", "a", held=0)

    def failing(run_id):
        raise OSError("S3 is down")

    monkeypatch.setattr(records, "quiet_actors", failing)
    assert not StopDrain(records, "run").may_leave()
