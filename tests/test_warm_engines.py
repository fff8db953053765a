"""Warm engines (pipelines/engine/warm_pool.py): in a driver that stays up, a second run with the same
model and engine settings is served by the engine actor of the first, with no model load; the
time it was held is priced; after keep_warm_seconds every CPU is free again."""

import time

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipelines.engine.warm_pool import POOL
from pipelines.run import release_engines, run
from pipelines.spec import PipelineSpec
from pipelines.store.ledger import compute_ledger
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.store.startup import PHASES

pytestmark = pytest.mark.engine

ROWS = 12


def spec(tmp_path, name: str, keep_warm: float, **compute) -> PipelineSpec:
    if not (tmp_path / "in.parquet").exists():
        pq.write_table(pa.table({"id": list(range(ROWS)), "text": [f"prompt {i}" for i in range(ROWS)]}),
                       tmp_path / "in.parquet")
    return PipelineSpec.model_validate({
        "input": {"paths": str(tmp_path / "in.parquet"), "prompt_column": "text"},
        "model": {"name": "tiny-random", "max_model_len": 256, "enforce_eager": True},
        "sampling": {"max_tokens": 8},
        "compute": {"keep_warm_seconds": keep_warm, "tokens_per_unit": 40, **compute},  # units of ~3 rows
        "output": {"path": str(tmp_path / name)}})


def actors_of(tmp_path, name: str) -> dict:
    return Records(OutputStore(str(tmp_path / name))).actors()


def exact(tmp_path, name: str) -> bool:
    ids = ds.dataset(str(tmp_path / name)).to_table().column("id").to_pylist()
    return sorted(ids) == list(range(ROWS))


def free_cpus() -> bool:
    import ray

    return ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]


def test_a_second_run_reuses_the_engine_and_the_cluster_is_free_after_the_window(tmp_path, ray_cluster,
                                                                                 tiny_model):
    first = run(spec(tmp_path, "first", keep_warm=20), interactive=False)
    assert first.finished and exact(tmp_path, "first")
    assert POOL.held() == 1 and not free_cpus()  # held for the next run
    time.sleep(1)
    second = run(spec(tmp_path, "second", keep_warm=20), interactive=False)
    assert second.finished and exact(tmp_path, "second")
    (a1,) = actors_of(tmp_path, "first").items()
    (a2,) = actors_of(tmp_path, "second").items()
    assert a1[1]["engine_id"] == a2[1]["engine_id"] and a1[0] != a2[0]  # one engine, a record in each run
    # where the first seconds went: the first run loaded the model, the second did not
    assert first.startup["model_load"] > 0 and not first.startup["warm_engine"]
    assert second.startup["warm_engine"] and second.startup["model_load"] == 0
    for s in (first.startup, second.startup):
        assert sum(s[p] for p in PHASES) == pytest.approx(s["to_first_result"], abs=0.01)
    assert "warm" not in a1[1] and a2[1]["warm"]["idle_seconds"] >= 1
    compile_ = a1[1]["compile"]
    assert compile_["enforce_eager"] is True and compile_["reason"] == "model.enforce_eager: true in the spec"
    assert 0 < compile_["engine_start_seconds"] < first.startup["model_load"] + first.startup["actor_start"] + 1
    # what its engine's start took is kept for the next run's compile choice; the warm one started nothing
    from pipelines.engine import facts as engine_facts

    kept = engine_facts.lookup(spec(tmp_path, "x", keep_warm=20).model, 0.0)
    assert kept["eager_start_seconds"] == compile_["engine_start_seconds"] and kept["run_id"] == a1[1]["run_id"]
    # no model load in the second: its record starts when the first run's work ended
    assert a2[1]["loaded_at"] == a2[1]["started_at"] < a2[1]["warm"]["actor_created_at"] + 3600
    # the wait between the runs is the second run's (its idle); none of it is load
    second_ledger = compute_ledger(OutputStore(str(tmp_path / "second")))
    assert second_ledger.summary.breakdown_usd["load"] == 0
    assert second_ledger.actors.column("started_at")[0].as_py() == a2[1]["started_at"]

    deadline = time.monotonic() + 60
    while (POOL.held() or not free_cpus()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert POOL.held() == 0 and free_cpus()  # scaled to zero
    # the time it was held after the second run is priced in that run's ledger
    released = actors_of(tmp_path, "second")[a2[0]]
    runs = Records(OutputStore(str(tmp_path / "second"))).runs()
    (run_record,) = runs.values()
    assert released["warm_until"] >= run_record["ended_at"] + 15
    ledger = compute_ledger(OutputStore(str(tmp_path / "second")))
    assert ledger.actors.column("ended_at")[0].as_py() == released["warm_until"]
    assert ledger.summary.breakdown_usd["idle"] > second_ledger.summary.breakdown_usd["idle"]


def test_other_engine_settings_get_other_engines_and_release_lets_them_go(tmp_path, ray_cluster, tiny_model):
    run(spec(tmp_path, "a", keep_warm=300), interactive=False)
    run(spec(tmp_path, "b", keep_warm=300, max_tokens_in_flight=2048), interactive=False)
    (a,) = actors_of(tmp_path, "a")
    (b,) = actors_of(tmp_path, "b")
    # one set is kept warm at a time: a's engine went when b's was made, so it never held b's CPUs
    assert a != b and POOL.held() == 1
    assert "warm_until" in actors_of(tmp_path, "a")[a]  # its time held after its run, priced there
    assert release_engines() == 1 and POOL.held() == 0
    deadline = time.monotonic() + 30
    while not free_cpus() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert free_cpus()


def test_the_cli_and_a_test_keep_nothing_warm_a_notebook_does(tmp_path, monkeypatch):
    import sys
    import types

    from pipelines.engine.warm_pool import DEFAULT_KEEP_WARM_SECONDS, keep_warm_seconds

    assert keep_warm_seconds(spec(tmp_path, "x", keep_warm=None)) == 0  # not an interactive Python
    kernel = types.ModuleType("IPython")
    kernel.get_ipython = lambda: object()  # a notebook's kernel answers with its shell
    monkeypatch.setitem(sys.modules, "IPython", kernel)
    assert keep_warm_seconds(spec(tmp_path, "x", keep_warm=None)) == DEFAULT_KEEP_WARM_SECONDS
    kernel.get_ipython = lambda: None  # IPython imported by a library, no shell
    assert keep_warm_seconds(spec(tmp_path, "x", keep_warm=None)) == 0


@pytest.mark.cluster
def test_a_warm_engine_whose_node_is_lost_between_runs_is_replaced_and_the_next_run_is_exact(tmp_path, tiny_model):
    import subprocess
    import sys

    import psutil

    from tests.helpers import ROOT, spotbatch_env, wait_until, write_spec
    from tests.ray_nodes import LocalCluster

    cluster = LocalCluster(head_cpus=1)
    try:
        nodes = [cluster.add_node(cpus=1, resources={"spot": 1}) for _ in range(2)]
        data = spec(tmp_path, "unused", keep_warm=300, spot_resource="spot").model_dump(mode="json")
        path = write_spec(tmp_path / "spec.yaml", data)
        log = tmp_path / "driver.log"
        with open(log, "w") as fh:
            driver = subprocess.Popen([sys.executable, "-m", "tests.warm_driver", str(path), str(tmp_path / "first"),
                                       str(tmp_path / "second")], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                      env={**spotbatch_env(), "RAY_ADDRESS": cluster.address})
        try:
            wait_until(lambda: (tmp_path / "first.done").exists(), 300, "the first run", driver, log)
            assert exact(tmp_path, "first")
            ((actor_id, record),) = actors_of(tmp_path, "first").items()
            assert psutil.pid_exists(record["pid"])  # held warm
            (node,) = [n for n in nodes if record["pid"] in {p.pid for p in n.processes()}]
            node.kill()  # its spot instance is taken while it waits for the next run
            (tmp_path / "go").write_text("")
            wait_until(lambda: (tmp_path / "second.done").exists(), 300, "the second run", driver, log)
        finally:
            driver.kill()
            driver.wait()
        assert '"finished": true' in (tmp_path / "second.done").read_text(), log.read_text()[-3000:]
        assert exact(tmp_path, "second")
        (second_actor,) = actors_of(tmp_path, "second")
        assert second_actor != actor_id  # a new engine, on the node that is left
    finally:
        cluster.shutdown()


def test_a_warm_engine_of_another_dtype_than_the_output_pinned_is_replaced(tmp_path, ray_cluster, tiny_model):
    """An output keeps the dtype its first engine loaded (`auto` depends on the hardware): a warm
    engine that loaded another is let go, and a new one loads the pinned dtype."""
    from pipelines.engine.actor import MODEL

    first = run(spec(tmp_path, "first", keep_warm=300), interactive=False)
    ((warm_id, warm),) = actors_of(tmp_path, "first").items()
    other = "float32" if warm["loaded_dtype"] != "float32" else "bfloat16"
    Records(OutputStore(str(tmp_path / "second"))).pin_loaded_dtype(MODEL, other, "an-engine-elsewhere")
    try:
        second = run(spec(tmp_path, "second", keep_warm=300), interactive=False)
    finally:
        release_engines()
    assert first.finished and second.finished and exact(tmp_path, "second")
    ((new_id, new),) = actors_of(tmp_path, "second").items()
    assert new_id != warm_id and new["loaded_dtype"] == other and not second.startup["warm_engine"]


def slow_warm_spec(tmp_path, name: str, template: str | None = None, **compute) -> PipelineSpec:
    """tests/test_cancel.py's slow job (60 units of 5 rows), on warm engines, into `name`."""
    from tests.conftest import write_shards
    from tests.test_cancel import slow_job
    from tests.test_resume import ROWS as SLOW_ROWS

    if not (tmp_path / "in").exists():
        write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(SLOW_ROWS)], shards=3)
    data = slow_job(tmp_path, str(tmp_path / name))
    if template is not None:
        data["input"].pop("prompt_column")
        data["input"]["template"] = template
    data["compute"].update({"keep_warm_seconds": 300, **compute})
    return PipelineSpec.model_validate(data)


def slow_exact(tmp_path, name: str) -> bool:
    from tests.test_resume import ROWS as SLOW_ROWS

    ids = ds.dataset(str(tmp_path / name)).to_table().column("id").to_pylist()
    return sorted(ids) == list(range(SLOW_ROWS))


def test_a_cancelled_run_resumes_on_the_engine_that_served_it(tmp_path, ray_cluster, tiny_model):
    """The notebook's flow: handle.cancel(), then start(spec) again on the same output, served by
    the same warm engine (a new record of it in that output), to every row exactly once."""
    from pipelines.background import start
    from tests.helpers import committed_ends, wait_until

    spec = slow_warm_spec(tmp_path, "out")
    store = OutputStore(spec.output.path)
    try:
        handle = start(spec, address=ray_cluster)
        wait_until(lambda: handle.done() or store.committed_units(), 300, "a committed unit")
        handle.cancel()
        asked = time.monotonic()
        first = handle.result(300)
        stop_seconds = time.monotonic() - asked
        assert first.stopped == "cancelled" and not first.finished, "cancelled too late to test anything"
        second = start(spec, address=ray_cluster).result(300)
    finally:
        release_engines()
    assert second.finished and second.stopped is None and slow_exact(tmp_path, "out")
    actors = actors_of(tmp_path, "out")
    assert len(actors) == 2 and len({a["engine_id"] for a in actors.values()}) == 1  # one engine, two runs
    assert second.startup["warm_engine"] and second.startup["model_load"] == 0
    # a stop costs the units in flight, never the units left: each unit here takes well under 5 s
    longest = max(e["engine_seconds"] for e in committed_ends(spec.output.path))
    assert stop_seconds < 2 * longest + 10, (stop_seconds, longest)


def test_a_second_interrupt_abandons_the_units_in_flight_and_their_engines_are_let_go(tmp_path, ray_cluster,
                                                                                      tiny_model):
    """An abandoned run's engines may still hold its units: they are never handed to the next
    run, which starts engines of its own and gets every row of its own, once."""
    import os
    import signal
    import threading

    first = slow_warm_spec(tmp_path, "a", units_in_flight=2, tokens_per_unit=3500)  # 6 units of 50 rows: seconds each
    store = OutputStore(first.output.path)

    def generating() -> bool:  # a unit claimed and not ended: in an engine for the next seconds
        return any("end" not in t for tries in Records(store).attempts().values() for t in tries.values())

    def interrupt_twice():
        while not generating():
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)
        records = Records(store)
        # Two signals that arrive before Python's handler runs are one: wait for the first's stop.
        while not any(records.stop_requested(r) for r in records.live_runs()):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_twice, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(first, address=ray_cluster, interactive=False)
        assert POOL.held() == 0  # let go, not kept warm for the next run
        second = run(slow_warm_spec(tmp_path, "b", template="Answer briefly: {text}"), address=ray_cluster,
                     interactive=False)
    finally:
        release_engines()
    assert second.finished and slow_exact(tmp_path, "b")
    b = OutputStore(str(tmp_path / "b"))
    assert set(ds.dataset(b.url).to_table().column("spec_fingerprint").to_pylist()) == {b.fingerprint()}
    a_engines = {r["engine_id"] for r in actors_of(tmp_path, "a").values()}
    assert a_engines.isdisjoint(r["engine_id"] for r in actors_of(tmp_path, "b").values())


@pytest.mark.timeout(300)  # the old pool sent units to an engine with no place to run: they waited forever
def test_warm_engines_start_at_min_actors_and_grow_only_into_room_the_cluster_has(tmp_path, ray_cluster, tiny_model):
    import ray

    release_engines()
    deadline = time.monotonic() + 60
    while not free_cpus() and time.monotonic() < deadline:  # engines let go by earlier tests leave
        time.sleep(0.5)
    room = int(ray.available_resources().get("CPU", 0)) // 2  # engines of 2 CPUs that fit now
    spec = slow_warm_spec(tmp_path, "out", actors=None, min_actors=1, max_actors=room + 1, cpus_per_actor=2)
    try:
        done = run(spec, address=ray_cluster, interactive=False)
        assert POOL.held() == room  # one more than fits was never started
    finally:
        release_engines()
    assert done.finished and slow_exact(tmp_path, "out")
    assert 1 <= len(actors_of(tmp_path, "out")) <= room
