"""Compaction folds ended runs' records into one archive: status and the ledger read the same
before and after, a later retry never reuses an attempt number, a running run is untouched
(no engine: units are run by the unit protocol with a fake generate, on disk and on S3)."""

import os
import time
import uuid

import pytest

from pipelines.spec import PipelineSpec
from pipelines.store.compact import compact
from pipelines.store.ledger import compute_ledger
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.store.status import run_status
from pipelines.unit.protocol import UnitContext, UnitProtocol
from tests.test_unit_protocol import FakeGenerate, unit_rows

NODE = {"node_id": "n1", "instance_type": "cpu-2vcpu", "market": "spot", "usd_per_hour": 0.36,
        "on_demand_usd_per_hour": 1.0, "price_source": "test", "share": 1.0}
UNITS = [f"0000{i}-u" for i in range(4)]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out"), {}
    return f"s3://spotbatch/{uuid.uuid4().hex[:8]}/out", request.getfixturevalue("s3_server")


def a_run(where, run_id: str, units: list[str], fail_first: str | None = None, ended: bool = True) -> None:
    """One invocation: its run record, one actor that beats, its units committed."""
    store = OutputStore(*where)
    records = Records(store)
    t0 = time.time() - 100
    records.run_record(run_id, {"started_at": t0, "ended_at": None, "stopped": None})
    actor = f"actor-{run_id}"
    records.actor_started(actor, {"run_id": run_id, "started_at": t0, "loaded_at": t0 + 3, "model": "m", **NODE})
    records.actor_beat(actor, {"time": time.time()})
    spec = PipelineSpec(input={"paths": "in", "prompt_column": "text"}, model={"name": "tiny-random"},
                        output={"path": where[0], "storage_options": where[1]})
    context = UnitContext(spec, fingerprint="fp", run_id=run_id, actor_id=actor, node_id="n1")
    protocol = UnitProtocol(context, FakeGenerate(), store=store)
    for unit in units:
        if unit == fail_first:
            failing = UnitProtocol(context, FakeGenerate(raises=RuntimeError("engine died")), store=store)
            with pytest.raises(RuntimeError):
                failing.run(unit, unit_rows())
        protocol.run(unit, unit_rows())
    if ended:
        records.run_record(run_id, {"started_at": t0, "ended_at": time.time(), "stopped": None})


def test_compaction_folds_ended_runs_and_everything_reads_the_same(where):
    store = OutputStore(*where)
    store.create_manifest({"fingerprint": "fp", "units": [{"unit_id": u} for u in UNITS], "input_rows": 16})
    a_run(where, "run-1", UNITS[:2], fail_first=UNITS[1])
    a_run(where, "run-2", UNITS[2:3])
    a_run(where, "run-3", UNITS[3:], ended=False)  # still going: untouched
    now = time.time()
    status, ledger = run_status(*where), compute_ledger(store, now=now)
    files_before = len(store.find("_spotbatch"))

    done = compact(store, now=now)
    assert (done.runs, done.actors) == (2, 2) and done.attempts == 4  # 3 units of ended runs, one tried twice
    assert len(store.find("_spotbatch")) < files_before - 5
    assert run_status(*where) == status
    after = compute_ledger(store, now=now)
    assert after.summary == ledger.summary
    assert after.actors.equals(ledger.actors) and after.units.equals(ledger.units)
    assert compact(store, now=now).files_removed == 0  # nothing more to fold

    # a --retry-failed on a folded unit takes a number none of its folded attempts had
    records = Records(store)
    seen = records.unit_attempts(UNITS[1])
    assert seen == {}
    assert records.claim_attempt(UNITS[1], seen, {"run_id": "run-4", "time": time.time()}) == "000002"
    # the running run's records are all still files
    assert Records(store).unit_attempts(UNITS[3]) and store.read("_spotbatch/runs/run-3.json")


def test_compaction_removes_staging_orphans_older_than_every_running_run(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.create_manifest({"fingerprint": "fp", "units": [], "input_rows": 0})
    (tmp_path / "out" / ".staging").mkdir()
    old = tmp_path / "out" / ".staging" / "u-dead.parquet"
    old.write_bytes(b"half")
    half = tmp_path / "out" / "_spotbatch" / "runs"
    half.mkdir(parents=True)
    (half / "r.json.abc.tmp").write_bytes(b"{")
    fresh = tmp_path / "out" / ".staging" / "u-live.parquet"
    fresh.write_bytes(b"being written")
    stale = time.time() - 7200
    os.utime(old, (stale, stale))
    os.utime(half / "r.json.abc.tmp", (stale, stale))
    assert compact(store).orphans_removed == 2
    assert not old.exists() and fresh.exists() and not (half / "r.json.abc.tmp").exists()


def test_compaction_removes_a_killed_writers_staged_file_and_keeps_each_merged_parts_lock_and_nonce(tmp_path):
    """A killed writer's staged file in .staging/ is swept. A merged part's lock and nonce stay:
    a waiter may hold the lock open (removing it would let two holders in) and the next merge
    compares the nonce."""
    store = OutputStore(str(tmp_path / "out"))
    store.create_manifest({"fingerprint": "fp", "units": [], "input_rows": 0})
    part = store._path("part-u.parquet")
    store.storage.put(part, b"results")
    _, version = store.storage.read_versioned(part)
    assert store.storage.put_if_version(part, b"merged", version)
    left = tmp_path / "out" / ".staging" / "part-w.parquet.0a1b.tmp"
    left.write_bytes(b"half a commit")
    stale = time.time() - 7200
    for f in (tmp_path / "out" / ".staging").iterdir():
        os.utime(f, (stale, stale))
    assert compact(store).orphans_removed == 1
    assert sorted(os.listdir(tmp_path / "out" / ".staging")) == ["part-u.parquet.lock", "part-u.parquet.version"]
    _, now = store.storage.read_versioned(part)
    assert store.storage.put_if_version(part, b"again", now)


def test_a_new_run_moves_the_folded_records_aside_with_the_rest(where):
    store = OutputStore(*where)
    store.create_manifest({"fingerprint": "fp", "units": [{"unit_id": u} for u in UNITS[:2]], "input_rows": 8})
    a_run(where, "run-1", UNITS[:2])
    assert compact(store).runs == 1 and Records(store).runs()
    store.supersede("fp")
    assert Records(store).runs() == {} and Records(store).attempts() == {}  # the new run starts with none
    assert store.find("_spotbatch/superseded")
