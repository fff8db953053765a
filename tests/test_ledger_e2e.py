"""The ledger of real runs: it reconciles with measured seconds and with the results' tokens,
and a budget stops a run resumably."""

import json
import re

import pyarrow.dataset as ds
import pytest

from pipelines.run import run
from pipelines.spec import PipelineSpec
from pipelines.store.ledger import compute_ledger
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.conftest import write_shards
from tests.helpers import spotbatch, write_spec

pytestmark = pytest.mark.engine


def make_spec(tmp_path, rows: int, **cost) -> PipelineSpec:
    if not (tmp_path / "in").exists():
        write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(rows)], shards=3)
    return PipelineSpec(
        input={"paths": str(tmp_path / "in"), "prompt_column": "text"},
        model={"name": "tiny-random", "max_model_len": 512, "enforce_eager": True},
        sampling={"max_tokens": 64},
        compute={"tokens_per_unit": 700},  # units of 10 rows
        cost=cost,
        output={"path": str(tmp_path / "out")},
    )


def test_ledger_reconciles_with_seconds_prices_and_tokens(tmp_path, ray_cluster, tiny_model):
    reference = {"name": "a provider's batch API", "usd_per_1m_input_tokens": 0.075,
                 "usd_per_1m_output_tokens": 0.30, "as_of": "2026-11-01"}
    summary = run(make_spec(tmp_path, 60, reference=reference), address=ray_cluster, interactive=False)
    assert summary.finished
    store = OutputStore(str(tmp_path / "out"))
    records = Records(store)
    (run_record,) = records.runs().values()
    actors = records.actors()
    assert len(actors) == 1
    # independently: each actor lived from its start to the end of the run, at its share of its node's price
    expected = sum((run_record["ended_at"] - a["started_at"]) * a["usd_per_hour"] * a["share"] / 3600
                   for a in actors.values())
    ledger = compute_ledger(store, reference)
    assert ledger.summary.total_usd == pytest.approx(expected, rel=0.01)
    assert sum(ledger.summary.breakdown_usd.values()) == pytest.approx(ledger.summary.total_usd, rel=1e-9)
    assert ledger.summary.breakdown_usd["load"] > 0 and ledger.summary.breakdown_usd["useful"] > 0
    results = ds.dataset(str(tmp_path / "out")).to_table()
    assert ledger.summary.input_tokens == sum(results.column("prompt_tokens").to_pylist())
    assert ledger.summary.output_tokens == sum(results.column("completion_tokens").to_pylist())
    assert summary.cost.total_usd == pytest.approx(ledger.summary.total_usd, rel=0.01)

    # the ledger files beside the results say the same, per unit and per actor
    units = ds.dataset(f"{tmp_path}/out/_spotbatch/ledger/units.parquet").to_table()
    actor_rows = ds.dataset(f"{tmp_path}/out/_spotbatch/ledger/actors.parquet").to_table()
    assert units.num_rows == summary.units_total
    assert sum(units.column("output_tokens").to_pylist()) == ledger.summary.output_tokens
    assert sum(actor_rows.column("usd_total").to_pylist()) == pytest.approx(ledger.summary.total_usd, rel=0.01)
    assert actor_rows.column("price_source")[0].as_py()

    out = spotbatch("report", str(tmp_path / "out"), "--json", "--plot", str(tmp_path / "cost.png"))
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    for key in ("total_usd", "input_tokens", "output_tokens", "usd_per_1m_input_tokens", "usd_per_1m_output_tokens"):
        assert data[key] is not None, key
    assert set(data["breakdown"]) == {"load", "useful", "idle", "wasted"}
    assert data["reference"]["name"] == reference["name"] and data["reference"]["ratio"] > 0
    assert data["output_tokens"] == ledger.summary.output_tokens
    assert (tmp_path / "cost.png").read_bytes()[:4] == b"\x89PNG"


def test_budget_stops_early_and_a_larger_budget_finishes(tmp_path, ray_cluster, tiny_model):
    # $360/hour: a dollar is ten seconds of the engine actor, so the figures are easy to follow
    price = {"prices": {"cpu-2vcpu": {"on_demand": 360.0}}}
    full_units = 30
    # less than loading the model costs: the run stops once it knows its actors' cost, after
    # its first unit (the arithmetic near the line is tests/test_progress.py's)
    first = run(make_spec(tmp_path, 300, max_cost_usd=0.5, **price), address=ray_cluster, interactive=False)
    assert first.stopped == "budget" and not first.finished
    assert 0 < first.units_run < full_units
    status = spotbatch("status", str(tmp_path / "out"), "--json")
    assert json.loads(status.stdout)["finished"] is False

    second = run(make_spec(tmp_path, 300, max_cost_usd=1000.0, **price), address=ray_cluster, interactive=False)
    assert second.finished and second.stopped is None
    assert first.units_run + second.units_run == full_units  # nothing committed twice, nothing lost
    ids = ds.dataset(str(tmp_path / "out")).to_table().column("id").to_pylist()
    assert sorted(ids) == list(range(300))
    # the ledger covers both invocations
    assert second.cost.total_usd > first.cost.total_usd


def test_budget_spent_already_starts_nothing(tmp_path, ray_cluster, tiny_model):
    price = {"prices": {"cpu-2vcpu": {"on_demand": 360.0}}}
    first = run(make_spec(tmp_path, 60, max_cost_usd=0.5, **price), address=ray_cluster, interactive=False)
    assert first.stopped == "budget"
    again = run(make_spec(tmp_path, 60, max_cost_usd=0.5, **price), address=ray_cluster, interactive=False)
    assert again.stopped == "budget" and again.units_run == 0
    spec_file = write_spec(tmp_path / "spec.yaml",
                           make_spec(tmp_path, 60, max_cost_usd=0.5, **price).model_dump(mode="json"))
    cli = spotbatch("run", str(spec_file), "--address", ray_cluster)
    assert cli.returncode == 3 and "stopped: budget" in cli.stdout, cli.stdout[-2000:] + cli.stderr[-2000:]
    assert len(Records(OutputStore(str(tmp_path / "out"))).actors()) == 1  # no engine was started again


def usd_per_1m_output_tokens(output) -> float:
    """From the ledger files written beside the results, not through the code that reports it."""
    actors = ds.dataset(f"{output}/_spotbatch/ledger/actors.parquet").to_table()
    units = ds.dataset(f"{output}/_spotbatch/ledger/units.parquet").to_table()
    return sum(actors.column("usd_total").to_pylist()) / sum(units.column("output_tokens").to_pylist()) * 1e6


def test_report_compares_cost_per_token_of_two_settings_and_names_what_differs(tmp_path, ray_cluster, tiny_model):
    """The same data in float32 and in bfloat16. Which costs more depends on the CPU (native bf16
    or emulated) and on a shared machine's noise, so the ratio is checked, not its direction."""
    for dtype in ("float32", "bfloat16"):
        spec = make_spec(tmp_path, 30)
        spec.model.dtype = dtype
        spec.output.path = str(tmp_path / dtype)
        assert run(spec, address=ray_cluster).finished
    ratio = usd_per_1m_output_tokens(tmp_path / "bfloat16") / usd_per_1m_output_tokens(tmp_path / "float32")
    out = spotbatch("report", str(tmp_path / "bfloat16"), "--compare", str(tmp_path / "float32"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "settings that differ (this run vs that one): model.dtype: 'bfloat16' vs 'float32'" in out.stdout
    printed = float(re.search(r"costs ([0-9.]+)x", out.stdout).group(1))
    assert printed == pytest.approx(ratio, abs=0.006)
    data = json.loads(spotbatch("report", str(tmp_path / "bfloat16"), "--json", "--compare",
                                str(tmp_path / "float32")).stdout)
    assert data["differences"] == ["model.dtype: 'bfloat16' vs 'float32'"]
    assert data["compare"]["usd_per_1m_output_tokens"] == pytest.approx(usd_per_1m_output_tokens(tmp_path / "float32"))
