"""Several models in one run: a column routes rows; each model's engine actors start with its
rows and are released when they are done; a model no row goes to never starts; the ledger has
a line per model (real vLLM engines: the tiny random model and SmolLM2)."""

import json

import pyarrow.dataset as ds
import pytest

from cluster.models import ModelNotFoundError
from pipelines.planning.inputs import InputError, list_shards
from pipelines.planning.units import make_plan
from pipelines.run import run
from pipelines.spec import PipelineSpec, SpecError, validate_spec
from pipelines.store.ledger import compute_ledger
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from spotbatch import export
from tests.conftest import write_shards

ROWS = [{"id": i, "text": f"Say something about item {i}.", "tier": ["easy", "hard", "easy", None][i % 4]}
        for i in range(24)]


def routed_spec(tmp, out="out", **route):
    (tmp / "unloadable-model").mkdir(exist_ok=True)
    (tmp / "unloadable-model" / "config.json").write_text("{}")
    return PipelineSpec(
        input={"paths": str(tmp / "in"), "prompt_column": "text"},
        models={
            "small": {"name": "tiny-random", "enforce_eager": True, "max_model_len": 256},
            "smol": {"name": "smollm2-135m", "enforce_eager": True, "max_model_len": 512, "dtype": "float32"},
            # a model folder no engine can load: the run only works if this model never starts
            "unused": {"name": str(tmp / "unloadable-model"), "enforce_eager": True},
        },
        route={"column": "tier", "map": {"easy": "small", "hard": "smol"}, **route},
        sampling={"max_tokens": 6, "temperature": 0.0},
        compute={"tokens_per_unit": 120},
        output={"path": str(tmp / out)},
    )


def test_every_row_gets_one_model_and_unrouted_rows_are_refused_before_any_engine(tmp_path):
    write_shards(tmp_path / "in", ROWS, shards=2)
    spec = routed_spec(tmp_path, default="small")
    plan = make_plan(spec, list_shards(spec.input))
    by_model = {}
    for u in plan.units:
        by_model[u.model] = by_model.get(u.model, 0) + u.rows
        assert u.unit_id.startswith(f"{u.model}-")
    assert by_model == {"small": 18, "smol": 6}  # easy and null rows to small, hard ones to smol
    no_default = routed_spec(tmp_path)
    with pytest.raises(InputError, match=r"'tier' has values that route to no model: None \(6 rows\)"):
        make_plan(no_default, list_shards(no_default.input))


def test_a_route_column_missing_from_the_input_is_named_before_any_engine(tmp_path):
    write_shards(tmp_path / "in", [{k: v for k, v in r.items() if k != "tier"} for r in ROWS], shards=1)
    spec = routed_spec(tmp_path, default="small")
    with pytest.raises(InputError, match="has no column 'tier', which route.column names"):
        make_plan(spec, list_shards(spec.input))


def test_route_must_name_defined_models():
    with pytest.raises(SpecError, match="route names models that models does not define: big"):
        validate_spec({"input": {"paths": "x", "prompt_column": "t"}, "output": {"path": "o"},
                       "models": {"small": {"name": "tiny-random"}},
                       "route": {"column": "tier", "map": {"hard": "big"}}})
    with pytest.raises(SpecError, match="models and route go together"):
        validate_spec({"input": {"paths": "x", "prompt_column": "t"}, "output": {"path": "o"},
                       "models": {"small": {"name": "tiny-random"}}})


def test_a_routed_model_whose_folder_does_not_exist_is_refused_before_anything_is_written(tmp_path):
    write_shards(tmp_path / "in", ROWS, shards=1)
    spec = routed_spec(tmp_path)
    spec.models["unused"].name = str(tmp_path / "no-such-model")  # no row goes to it: still a typo
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        run(spec)
    assert not (tmp_path / "out").exists()


@pytest.mark.engine
def test_two_models_run_one_after_another_and_each_has_a_ledger_line(tmp_path, ray_cluster, tiny_model, smollm2):
    write_shards(tmp_path / "in", ROWS, shards=2)
    spec = routed_spec(tmp_path, default="small")
    summary = run(spec, address=ray_cluster)
    assert summary.finished and summary.errors == 0
    results = ds.dataset(str(tmp_path / "out")).to_table().to_pylist()
    assert sorted(r["id"] for r in results) == list(range(24))
    for r in results:  # each row answered by the model its tier routes it to
        expected = "smollm2-135m" if ROWS[r["id"]]["tier"] == "hard" else "tiny-random"
        assert r["model"] == expected and r["completion_tokens"] > 0

    actors = Records(OutputStore(str(tmp_path / "out"))).actors()
    models = {a["model"] for a in actors.values()}
    assert models == {"small", "smol"}  # "unused" never started (no engine could load its folder)
    small = [a for a in actors.values() if a["model"] == "small"]
    smol = [a for a in actors.values() if a["model"] == "smol"]
    first, second = (small, smol) if min(a["started_at"] for a in small) < min(a["started_at"] for a in smol) \
        else (smol, small)
    # the second model's actors started only once the first model's were done
    assert min(a["started_at"] for a in second) >= max(a["last_seen"] for a in first) - 1.0

    ledger = compute_ledger(OutputStore(str(tmp_path / "out")))
    lines = ledger.summary.by_model
    assert set(lines) == {"small", "smol"}
    assert sum(m["output_tokens"] for m in lines.values()) == ledger.summary.output_tokens == summary.completion_tokens
    smol_tokens = sum(r["completion_tokens"] for r in results if r["model"] == "smollm2-135m")
    assert lines["smol"]["output_tokens"] == smol_tokens
    assert all(m["usd"] > 0 for m in lines.values())
    assert abs(sum(m["usd"] for m in lines.values()) - ledger.summary.total_usd) < 1e-9
    assert set(ledger.actors.column("model").to_pylist()) == {"small", "smol"}

    # the provider-format export names the model that answered each row
    export(str(tmp_path / "out"), "openai-batch", str(tmp_path / "batch_output.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "batch_output.jsonl").read_text().splitlines()]
    assert len(lines) == 24
    for line in lines:
        answered_by = "smollm2-135m" if ROWS[int(line["custom_id"])]["tier"] == "hard" else "tiny-random"
        assert line["response"]["body"]["model"] == answered_by
