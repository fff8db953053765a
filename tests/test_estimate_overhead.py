"""A run's overhead in the estimate (pipelines/estimate/overhead.py): the whole of it in the
estimate's time, and in its $ only what the ledger prices, an engine actor from its start to its
release; so `spotbatch report --estimate` compares the same seconds on both sides."""

import json

import pytest

from jobs.cli import main
from pipelines.engine import facts as engine_facts
from pipelines.spec import load_spec
from tests.test_estimate import estimate_json, write_spec

ON_DEMAND = 0.0816  # cpu-2vcpu on demand in cluster/prices.yaml
NODE = {"node_id": "n1", "instance_type": "cpu-2vcpu", "market": "on_demand", "usd_per_hour": ON_DEMAND,
        "on_demand_usd_per_hour": ON_DEMAND, "price_source": "test", "share": 1.0}


def record_a_run(store) -> None:
    """A run's records as its driver and engine actor write them: the run from 1000 to 1100; its
    actor placed at 1018 (Ray's start before), its engine loaded at 1040 after a 20 s engine start,
    busy until its last request at 1090, released with the run."""
    from pipelines.store.records import Records

    records = Records(store)
    records.run_record("r1", {"started_at": 1000.0, "ended_at": 1100.0, "stopped": None})
    records.actor_started("a1", {"run_id": "r1", "started_at": 1018.0, "loaded_at": 1040.0, "model": "model",
                                 "compile": {"engine_start_seconds": 20.0}, **NODE})
    records.actor_beat("a1", {"time": 1099.0, "engine": {"last_finished_at": 1090.0}})


def test_an_estimate_prices_the_spans_the_ledger_prices_and_times_the_whole_run(tmp_path, capsys, tiny_model):
    from pipelines.estimate.calibrate import remember_overhead
    from pipelines.planning.plan_run import prepare
    from pipelines.store.ledger import compute_ledger

    spec_path = write_spec(tmp_path, tiny_model, rows=40, cost={"instance_type": "cpu-2vcpu", "market": "on_demand"})
    spec = load_spec(spec_path)
    store, _ = prepare(spec)
    record_a_run(store)
    remember_overhead(spec)  # what a calibration keeps of its run
    kept = engine_facts.lookup(spec.model, 0.0)["on"]["cpu-2vcpu"]
    # 18 s before the actor (not priced); 2 s of its set-up beside its engine's start and 10 s
    # after its last request (priced as load and idle): the ledger's 82 s less engine start and steps.
    assert (kept["run_overhead_seconds"], kept["before_engine_seconds"], kept["priced_overhead_seconds"]) == (
        30.0, 18.0, 12.0)
    actor = compute_ledger(store).actors.to_pylist()[0]
    assert actor["ended_at"] - actor["started_at"] == 12.0 + 20.0 + (1090.0 - 1040.0)

    # An engine speed that makes the estimate's steps the run's 50 busy seconds: the estimate is the run.
    output_tokens = estimate_json(capsys, spec_path)["work"]["output_tokens"]
    engine_facts.remember(spec.model, 0.0, {"on": {"cpu-2vcpu": {
        "tokens_per_second": output_tokens / 50.0, "start_seconds": 20.0, "engines": 1, "run_id": "r1"}}}, "r1")
    est = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")
    option = next(o for o in est["options"] if o["market"] == "on_demand")
    assert option["seconds"] == pytest.approx(100.0) and option["priced_seconds"] == pytest.approx(82.0)
    assert option["usd"] == pytest.approx(ON_DEMAND * 82.0 / 3600)
    assert ("plus 30 s of a run's overhead measured by run r1: 18 s before its engine actor started (Ray's start, "
            "the actor's placement) and 0 s after the actor's release are time only; $ prices 12 s of it"
            ) in option["seconds_from"]

    (tmp_path / "estimate.json").write_text(json.dumps(est))
    assert main(["report", str(tmp_path / "out"), "--json", "--estimate", str(tmp_path / "estimate.json")]) == 0
    check = json.loads(capsys.readouterr().out)["estimate"]
    assert check["seconds"]["error"] == pytest.approx(0.0, abs=1e-9)  # the run's wall time against its wall time
    assert check["usd"]["error"] == pytest.approx(0.0, abs=1e-9)  # the ledger's spans against the ledger's


def test_overhead_kept_before_the_split_is_priced_whole_and_says_so(tmp_path, capsys, tiny_model):
    spec_path = write_spec(tmp_path, tiny_model, rows=40)
    on = {"tokens_per_second": 400.0, "start_seconds": 5.0, "engines": 1, "run_id": "r1",
          "run_overhead_seconds": 12.0, "run_overhead_run_id": "r1"}
    engine_facts.remember(load_spec(spec_path).model, 0.0, {"on": {"cpu-2vcpu": on}}, "r1")
    option = next(o for o in estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"]
                  if o["market"] == "on_demand")
    assert option["priced_seconds"] == option["seconds"] > 12.0 + 5.0
    assert option["usd"] == pytest.approx(ON_DEMAND * option["seconds"] / 3600)
    assert ("plus 12 s of a run's overhead measured by run r1 (Ray's start, the actor's placement, the wrap-up), "
            "all in $: that run kept no split of what the ledger prices, so $ errs high") in option["seconds_from"]


def test_a_runs_overhead_is_split_where_the_ledger_starts_and_ends_its_engine_actor():
    from pipelines.estimate.overhead import Overhead, run_overhead

    run = {"started_at": 100.0, "ended_at": 200.0}
    actor = {"run_id": "r", "started_at": 112.0, "loaded_at": 130.0, "compile": {"engine_start_seconds": 15.0},
             "engine": {"last_finished_at": 190.0}, "last_seen": 199.0, "beat_seconds": 10.0}
    assert run_overhead(run, [actor, {"loaded_at": 140.0, "engine": {}}]) == Overhead(
        before_engine=12.0, actor_setup=3.0, wrap_up=10.0, after_release=0.0)
    # Lost before the run ended: the ledger ends it one beat after its last, and the rest is time only.
    lost = run_overhead(run, [{**actor, "engine": {"last_finished_at": 160.0}, "last_seen": 165.0}], now=300.0)
    assert (lost.wrap_up, lost.after_release, lost.priced, lost.seconds) == (15.0, 25.0, 18.0, 55.0)
    assert run_overhead(run, [{"loaded_at": 140.0, "engine": {}}]) is None  # no engine finished a request


def test_a_routed_calibration_keeps_its_overhead_under_each_routed_model_never_the_default(tmp_path, monkeypatch,
                                                                                          tiny_model):
    from pipelines.estimate import overhead
    from pipelines.store import records as records_module

    models = {"a": {"name": str(tiny_model), "max_model_len": 1024}}  # not the default model's key
    spec = load_spec(write_spec(tmp_path, tiny_model, rows=4, models=models, route={"column": "text", "default": "a"}))

    class Records:  # the calibration run's records: one engine of model a, 15 s outside its engine
        def __init__(self, store):
            pass

        def runs(self):
            return {"r7": {"started_at": 100.0, "ended_at": 200.0}}

        def actors(self):
            return {"x": {"run_id": "r7", "instance_type": "cpu-2vcpu", "model": "a", "started_at": 110.0,
                          "loaded_at": 130.0, "compile": {"engine_start_seconds": 20.0}, "last_seen": 199.0,
                          "engine": {"last_finished_at": 195.0}}}

    monkeypatch.setattr(records_module, "Records", Records)
    overhead.remember_overhead(spec)
    assert engine_facts.lookup(spec.models["a"], 0.0)["on"]["cpu-2vcpu"]["run_overhead_seconds"] == 15.0
    assert engine_facts.lookup(spec.model, 0.0) == {}
