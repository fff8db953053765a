"""--new-run moves an output's run aside only once that run has stopped (no engine needed)."""

import time

import pytest

from pipelines.run import prepare
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputError, OutputStore
from pipelines.store.records import HEARTBEAT_SECONDS, Records
from tests.conftest import write_shards


def spec(tmp_path, temperature: float = 0.0) -> PipelineSpec:
    return PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text"}, model={"name": "tiny-random"},
                        sampling={"temperature": temperature, "seed": 1}, output={"path": str(tmp_path / "out")})


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
