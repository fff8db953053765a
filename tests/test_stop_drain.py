"""When a stopped run may leave Ray Data's stream (pipelines/stops/drain.py): only once every live
engine actor of the run has said it is quiet and every unit it held has reached the driver.
The end-to-end figure is `python -m jobs.bench.stop_latency`; tests/test_cancel.py runs it."""

import threading
import time
import types

import pyarrow as pa
import pytest

import pipelines.stops.drain as stop_drain
from pipelines.engine.actor import EngineActor
from pipelines.engine.in_hand import UnitsInHand
from pipelines.engine.watch import quiet_after_stop
from pipelines.stops.drain import StopDrain
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.stream.unit_rows import ERROR, UNIT_ROWS
from pipelines.unit.protocol import SKIP_STOP, UnitOutcome


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


class _Protocol:
    """The unit protocol's two stop reads: the cached pre-check, and step 1's fresh read."""

    def __init__(self):
        self.reason = None

    def stopped(self):
        return self.reason

    def run(self, unit_id, rows):
        if self.reason:
            return UnitOutcome(unit_id=unit_id, skipped=SKIP_STOP + self.reason)
        return UnitOutcome(unit_id=unit_id, committed=True)


class _Feeder:
    failed = False

    def __init__(self):
        self.hungry = threading.Event()

    def wait_until_hungry(self):
        self.hungry.wait()

    def release_turn(self):
        pass


def test_an_engines_count_of_held_units_is_exact_when_a_unit_enters_after_it_said_it_was_quiet(monkeypatch):
    """Unit u2 passes the cached stop check before the stop is seen and waits for the engine;
    the engine says it is quiet (u1 committed); then u2 enters, is skipped by step 1's fresh
    read, and must not count: else its row, arriving first, would let the driver leave before
    u1's committed row has arrived."""
    monkeypatch.setattr(stop_drain, "CHECK_SECONDS", 0.0)
    quiet = {}
    protocol, feeder = _Protocol(), _Feeder()
    bound = types.SimpleNamespace(
        run_id="r", actor_id="a", started_at=0.0, protocol=protocol, node=types.SimpleNamespace(usd_per_second=0.0),
        records=types.SimpleNamespace(actor_quiet=lambda run, actor, held: quiet.update({actor: held})))
    engine = EngineActor.__new__(EngineActor)  # its unit bookkeeping, without an engine
    engine.units, engine.feeder, engine.bound = UnitsInHand(), feeder, bound
    rows = pa.table({UNIT_ROWS: [1], ERROR: [None]})
    feeder.hungry.set()
    u1 = engine._unit(bound, "u1", rows)
    feeder.hungry.clear()
    late = {}
    waiting = threading.Thread(target=lambda: late.update(row=engine._unit(bound, "u2", rows)))
    waiting.start()
    time.sleep(0.2)  # u2 is past the pre-check, waiting for the engine
    protocol.reason = "cancelled"
    quiet_after_stop(engine.units, bound, 0.01, lambda: engine.bound)
    feeder.hungry.set()
    waiting.join()
    assert u1["committed"] and u1["held"] and quiet == {"a": 1}
    assert late["row"]["skipped"] == SKIP_STOP + "cancelled" and not late["row"]["held"]
    drain = StopDrain(types.SimpleNamespace(
        quiet_actors=lambda run: quiet,
        live_actors=lambda: ({"a": {"run_id": "r", "beat_seconds": 5.0}}, {"a": {"time": time.time()}})), "r")
    drain.seen(late["row"])  # u2's block reaches the driver before u1's
    assert not drain.may_leave()
    drain.seen(u1)
    assert drain.may_leave()
