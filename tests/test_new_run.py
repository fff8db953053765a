"""--new-run moves an output's run aside, changed or not, only once that run has stopped (no
engine needed: results are committed by hand, and live runs are their records)."""

import json
import time

import pytest

from pipelines.run import prepare
from pipelines.spec import PipelineSpec
from pipelines.store.output import SUPERSEDED, SUPERSEDING, OutputError, OutputStore
from pipelines.store.records import HEARTBEAT_SECONDS, Records
from tests.conftest import commit_by_hand, write_shards
from tests.helpers import spotbatch, write_spec


def spec(tmp_path, temperature: float = 0.0, tokens_per_unit: int | None = None) -> PipelineSpec:
    return PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text"}, model={"name": "tiny-random"},
                        sampling={"temperature": temperature, "seed": 1}, output={"path": str(tmp_path / "out")},
                        compute={"tokens_per_unit": tokens_per_unit} if tokens_per_unit else {})


def test_new_run_is_refused_while_the_old_runs_actors_beat_and_goes_ahead_once_they_stop(tmp_path):
    write_shards(tmp_path / "in", [{"id": i, "text": f"t {i}"} for i in range(4)], shards=1)
    store, plan = prepare(spec(tmp_path))
    records = Records(store)
    records.run_record("run-old", {"started_at": time.time(), "pid": 4242, "host": "node-a"})
    records.actor_started("actor-1", {"run_id": "run-old", "started_at": time.time(), "loaded_at": time.time()})
    records.actor_beat("actor-1", {"time": time.time()})

    with pytest.raises(OutputError) as refused:
        prepare(spec(tmp_path, temperature=0.5), new_run=True)
    assert "run-old (driver pid 4242 on node-a)" in str(refused.value) and "kill 4242" in str(refused.value)
    assert store.fingerprint() == plan.fingerprint  # nothing moved

    records.actor_beat("actor-1", {"time": time.time() - 3 * HEARTBEAT_SECONDS})  # it stopped
    _, new_plan = prepare(spec(tmp_path, temperature=0.5), new_run=True)
    assert store.fingerprint() == new_plan.fingerprint != plan.fingerprint
    assert OutputStore(str(tmp_path / "out")).find("_spotbatch/superseded")  # the old run, kept


def test_new_run_goes_ahead_right_after_the_old_run_ended(tmp_path):
    """Its actors beat a moment ago, but its run record says it ended: they were released with it."""
    write_shards(tmp_path / "in", [{"id": i, "text": f"t {i}"} for i in range(4)], shards=1)
    store, plan = prepare(spec(tmp_path))
    records = Records(store)
    records.run_record("run-old", {"started_at": time.time() - 60, "ended_at": time.time(), "pid": 1, "host": "h"})
    records.actor_started("actor-1", {"run_id": "run-old", "started_at": time.time(), "loaded_at": time.time()})
    records.actor_beat("actor-1", {"time": time.time()})
    _, new_plan = prepare(spec(tmp_path, temperature=0.5), new_run=True)
    assert store.fingerprint() == new_plan.fingerprint != plan.fingerprint


# --new-run always starts over, whether or not the spec changed (issue 27, item 4).

def finished_output(tmp_path) -> tuple[OutputStore, object]:
    """An output whose every unit is committed (by hand: no engine), its spec beside it."""
    write_shards(tmp_path / "in", [{"id": i, "text": f"t {i}"} for i in range(12)], shards=1)
    store, plan = prepare(spec(tmp_path, tokens_per_unit=20))
    assert len(plan.units) > 1
    commit_by_hand(store, plan)
    write_spec(tmp_path / "spec.yaml", spec(tmp_path, tokens_per_unit=20).model_dump(mode="json"))
    return store, plan


def superseded(tmp_path) -> dict[str, list[str]]:
    """Each run moved aside, and the names in it."""
    root = tmp_path / "out" / "_spotbatch" / "superseded"
    return {d.name: sorted(p.name for p in d.iterdir()) for d in root.iterdir()} if root.exists() else {}


def test_new_run_of_an_unchanged_spec_moves_the_results_aside_and_starts_over(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_LOG_DIR", str(tmp_path / "logs"))
    store, plan = finished_output(tmp_path)
    parts = sorted(store.part_name(u.unit_id) for u in plan.units)
    # A deadline already passed stops the new run before any engine starts (exit 4).
    proc = spotbatch("run", str(tmp_path / "spec.yaml"), "--new-run", "--set", "compute.deadline=0s")
    assert proc.returncode == 4 and "results were moved to" in proc.stdout, (proc.returncode, proc.stdout[-2000:])
    assert store.committed_units() == set()  # started over: every unit pending again
    [(moved, names)] = superseded(tmp_path).items()
    assert moved.startswith(plan.fingerprint) and set(parts) <= set(names) and "manifest.json" in names
    assert store.read_manifest()["fingerprint"] == plan.fingerprint  # a new run of the same spec


def test_new_run_of_an_unchanged_spec_is_refused_while_its_run_works(tmp_path):
    store, plan = finished_output(tmp_path)
    records = Records(store)
    records.run_record("run-old", {"started_at": time.time(), "pid": 4242, "host": "node-a"})
    records.actor_started("actor-1", {"run_id": "run-old", "started_at": time.time(), "loaded_at": time.time()})
    records.actor_beat("actor-1", {"time": time.time()})
    proc = spotbatch("run", str(tmp_path / "spec.yaml"), "--new-run")
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:])
    assert "--new-run refused: run run-old (driver pid 4242 on node-a)" in proc.stderr, proc.stderr[-2000:]
    assert store.committed_units() == {u.unit_id for u in plan.units} and not superseded(tmp_path)


def test_new_run_of_an_output_with_a_plan_and_no_results_yet_starts_over(tmp_path):
    write_shards(tmp_path / "in", [{"id": i, "text": f"t {i}"} for i in range(4)], shards=1)
    store, plan = prepare(spec(tmp_path))
    first = store.read_manifest()
    prepare(spec(tmp_path), new_run=True)
    [(moved, names)] = superseded(tmp_path).items()
    assert "manifest.json" in names and not any(n.startswith("part-") for n in names)
    assert json.loads(store.read(f"{SUPERSEDED}/{moved}/manifest.json")) == first == store.read_manifest()


def test_two_new_runs_in_one_second_keep_both_runs_they_moved_aside(tmp_path, monkeypatch):
    store, plan = finished_output(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *t: "20261201T120000")  # both moves in one second
    prepare(spec(tmp_path, tokens_per_unit=20), new_run=True)
    commit_by_hand(store, plan)
    prepare(spec(tmp_path, tokens_per_unit=20), new_run=True)
    moved = superseded(tmp_path)
    assert len(moved) == 2  # each in a folder of its own, nothing moved onto the other
    for names in moved.values():
        assert {store.part_name(u.unit_id) for u in plan.units} <= set(names) and "manifest.json" in names


def test_new_run_after_an_interrupted_new_run_moves_the_run_aside_once(tmp_path):
    store, plan = finished_output(tmp_path)
    store.put(SUPERSEDING, json.dumps({"dest": f"{SUPERSEDED}/{plan.fingerprint}-interrupted"}).encode())
    prepare(spec(tmp_path, tokens_per_unit=20), new_run=True)  # finishes that move; nothing else to move
    assert list(superseded(tmp_path)) == [f"{plan.fingerprint}-interrupted"]
    assert store.committed_units() == set()
