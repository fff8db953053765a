"""The typed records (pipelines/store/record_types.py) read and write exactly the JSON the
records always had: records written before them (tests/fixtures/records_before_issue29/, by
the code of commit fd5f0c6: the unit protocol's attempts as it ran them, and the actor, beat
and run records as its writers built them) round-trip byte for byte, today's writers write the
same keys in the same order, and an older record without newer keys reads and writes back
unchanged."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from pipelines.store.output import OutputStore
from pipelines.store.record_types import ABSENT, ActorRecord, AttemptEnd, AttemptStart, BeatRecord, RunRecord
from pipelines.unit import protocol as unit_protocol
from pipelines.unit.protocol import Skip, UnitContext, UnitProtocol
from tests.test_unit_protocol import FakeGenerate, make_spec, unit_rows

BEFORE = Path(__file__).parent / "fixtures" / "records_before_issue29"
RECORDS = sorted(BEFORE.rglob("*.json"))


def record_type(path: Path):
    name = path.name
    if path.parent.parent.name == "attempts":
        return AttemptStart if name.endswith(".start.json") else AttemptEnd
    if path.parent.name == "actors":
        return BeatRecord if name.endswith(".beat.json") else ActorRecord
    return RunRecord


def test_the_fixture_holds_every_kind_of_record():
    kinds = {record_type(p) for p in RECORDS}
    assert kinds == {AttemptStart, AttemptEnd, ActorRecord, BeatRecord, RunRecord} and len(RECORDS) == 15


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: str(p.relative_to(BEFORE)))
def test_a_record_written_before_round_trips_byte_for_byte(path):
    data = path.read_bytes()
    record = record_type(path).from_json(json.loads(data))
    assert json.dumps(record.to_json()).encode() == data
    assert record.extra == {}  # every key it has is a field: none is only carried along
    again = pickle.loads(pickle.dumps(record))
    assert json.dumps(again.to_json()).encode() == data


def masked(value):
    """A record with what differs between two runs of the same steps (clock, process) masked."""
    if isinstance(value, dict):
        return {k: "*" if k in ("time", "pid", "engine_seconds") else masked(v) for k, v in value.items()}
    return value


def test_todays_protocol_writes_the_same_keys_in_the_same_order(tmp_path, monkeypatch):
    """The same steps as the fixture's attempts, run by today's unit protocol."""
    monkeypatch.setattr(unit_protocol, "STORAGE_BACKOFF_SECONDS", 0.0)
    where = (str(tmp_path / "out"), {})
    OutputStore(*where).create_manifest({"fingerprint": "fp"})
    context = UnitContext(make_spec(where), fingerprint="fp", run_id="run-a", actor_id="actor-a", node_id="node-1",
                          engine_stats=lambda: {"steps": 3}, storage_requests=lambda: {"PUT": 2})
    with pytest.raises(RuntimeError):
        UnitProtocol(context, FakeGenerate(raises=RuntimeError("the engine died"))).run("00001-engine", unit_rows())
    store = OutputStore(*where)
    commit, failed = store.commit, []

    def commit_once_fails(*args, **kwargs):
        if not failed:
            failed.append(True)
            raise OSError("No space left on device")
        return commit(*args, **kwargs)

    store.commit = commit_once_fails
    UnitProtocol(context, FakeGenerate(), store=store).run("00002-storage", unit_rows())
    UnitProtocol(context, FakeGenerate()).run("00000-committed", unit_rows(3, bad=(1,)))
    UnitProtocol(context, FakeGenerate()).unreadable(
        "00003-unread", Skip.INPUT_CHANGED, "input_changed: in/shard-0.parquet changed since the run was planned")
    written = sorted((tmp_path / "out" / "_spotbatch" / "attempts").rglob("*.json"))
    before = [p for p in RECORDS if p.parent.parent.name == "attempts"]
    assert [p.relative_to(tmp_path / "out") for p in written] == [p.relative_to(BEFORE) for p in before]
    for new, old in zip(written, before):
        assert json.dumps(masked(json.loads(new.read_bytes()))) == json.dumps(masked(json.loads(old.read_bytes())))


def test_todays_actor_beat_and_run_records_build_the_same_json():
    actor = json.loads((BEFORE / "_spotbatch/actors/actor-warm.json").read_bytes())
    node = {k: actor[k] for k in ("node_id", "instance_type", "market", "usd_per_hour", "on_demand_usd_per_hour",
                                  "price_source", "share")}
    built = ActorRecord(beat_seconds=5.0, engine_id="actor-a", run_id="run-b", pid=1234, started_at=30.0,
                        loaded_at=30.0, niceness=0, model="tiny-random",
                        model_source={"kind": "builtin", "dtype_from_run": True}, loaded_dtype="float32",
                        compile={"enforce_eager": True, "reason": "the test's"}, node=node,
                        warm={"idle_seconds": 2.0, "actor_created_at": 1.5})
    assert json.dumps(built.to_json()) == json.dumps(actor)
    beat = json.loads((BEFORE / "_spotbatch/actors/actor-notice.beat.json").read_bytes())
    assert BeatRecord(time=20.0, period=5.0, notice="aws: termination at 21", storage_requests={}).to_json() == beat
    assert list(BeatRecord(time=20.0, period=5.0, notice="x", storage_requests={}).to_json()) == list(beat)


def test_an_older_record_without_newer_keys_reads_and_writes_back_unchanged():
    older = {"engine_id": "e1", "run_id": "r", "pid": 7, "started_at": 1.0, "loaded_at": 2.0, "model": "m",
             "node_id": "n", "instance_type": "local", "market": "on_demand", "usd_per_hour": 0.0,
             "share": 1.0, "a_key_of_a_newer_version": [1, 2]}
    record = ActorRecord.from_json(older)
    assert record.compile is ABSENT and record.warm is ABSENT and record.beat_seconds is ABSENT
    assert record.node["node_id"] == "n" and "price_source" not in record.node
    assert record.extra == {"a_key_of_a_newer_version": [1, 2]}
    assert json.dumps(record.to_json()) == json.dumps(older)
    assert AttemptStart.from_json({"actor_id": "a", "time": 1.0}).to_json() == {"actor_id": "a", "time": 1.0}
    assert RunRecord.from_json({"started_at": 1.0, "ended_at": None}).ended_at is None  # null is a value, kept


def test_a_runs_record_built_as_the_run_builds_it_is_what_it_always_was():
    """The steps of pipelines/run.py's run record (built, given a deadline, Ray ready, ended,
    written with the driver's S3 requests) give the fixture's run record, byte for byte."""
    from dataclasses import replace

    from pipelines import run_context

    record = RunRecord(invoked_at=0.5, started_at=1.0, pid=99, host="h", units_pending=4, ended_at=None,
                       stopped=None, max_cost_usd=None, reference=None)
    record.deadline = None
    record.ray_ready_at = 1.25
    record.ended_at, record.stopped = 40.0, "budget"
    before = (BEFORE / "_spotbatch/runs/run-a.json").read_bytes()
    assert json.dumps(replace(record, storage_requests={"GET": 4}).to_json()).encode() == before
    assert run_context.RunRecord is RunRecord  # the run builds this one



def test_an_attempts_outcome_is_a_kind_written_as_the_words_it_always_was(tmp_path):
    """The protocol hands on how an attempt ended as an AttemptOutcome, never as words to
    compare; its end record still says "committed", "already committed" or "failed"."""
    from operators.generate import RowBatch
    from pipelines.store.counts import UnitCounts
    from pipelines.store.record_types import AttemptOutcome, attempt_outcome
    from pipelines.store.records import Records
    from pipelines.stream.unit_rows import ID, PROMPT
    from pipelines.unit.commits import result_table

    where = (str(tmp_path / "out"), {})
    OutputStore(*where).create_manifest({"fingerprint": "fp"})
    context = UnitContext(make_spec(where), fingerprint="fp", run_id="r", actor_id="a", node_id="n")
    assert UnitProtocol(context, FakeGenerate()).run("u", unit_rows()).committed
    with pytest.raises(RuntimeError):
        UnitProtocol(context, FakeGenerate(raises=RuntimeError("the engine died"))).run("v", unit_rows())
    records = Records(OutputStore(*where))
    (committed,), (failed,) = records.unit_attempts("u").values(), records.unit_attempts("v").values()
    assert (committed["end"]["outcome"], failed["end"]["outcome"]) == ("committed", "failed")  # as read from disk
    assert attempt_outcome(committed) is AttemptOutcome.COMMITTED and attempt_outcome(failed) is AttemptOutcome.FAILED
    assert attempt_outcome({"end": {"outcome": "a newer writer's"}}) is None and attempt_outcome({}) is None

    rows = unit_rows()
    cols = FakeGenerate()(RowBatch(rows.column(PROMPT).to_pylist(), [None] * rows.num_rows))
    table = result_table(context, rows.column(ID), cols)
    again = UnitProtocol(context, FakeGenerate()).commits.if_current("u", table, UnitCounts.of_results(cols, 0.0))
    assert again is AttemptOutcome.ALREADY_COMMITTED and again == "already committed"
