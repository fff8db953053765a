"""Compiling or eager, when the spec leaves it open: by the decoding work ahead of each engine
against the compile cost (pipelines/engine/compile_choice.py), read from the rows' own limits
(pipelines/engine/decode_work.py), a row without one running to the context."""

import json
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.engine.compile_choice import COMPILE_GAIN, Told, choose, for_run
from pipelines.engine.decode_work import prompt_tokens_per_row, tokens_ahead
from pipelines.formats.batch_files import resolve_input
from pipelines.planning.inputs import list_shards
from pipelines.planning.units import Plan, Unit
from pipelines.run import prepare
from pipelines.spec import PipelineSpec


def spec(**model) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "input": {"paths": "in/", "prompt_column": "text"}, "model": {"name": "tiny-random", **model},
        "sampling": {"max_tokens": 256}, "output": {"path": "out/"}})


def test_a_small_batch_runs_eager_and_a_long_night_compiles():
    assert for_run(spec(), tokens=50 * 256, engines=1).enforce_eager
    assert not for_run(spec(), tokens=100_000 * 256, engines=4).enforce_eager


@pytest.mark.parametrize("told", [True, False])
def test_what_the_spec_says_is_what_runs(told):
    choice = for_run(spec(enforce_eager=told), tokens=(100_000 if told else 5) * 256, engines=1)
    assert choice.enforce_eager is told and "in the spec" in choice.reason


def test_the_line_is_where_the_gain_repays_the_cost():
    # 45 s to compile at 100 tokens/s: it pays from 45 * (1 + g) / g seconds of decoding ahead
    seconds = 45.0 * (1 + COMPILE_GAIN) / COMPILE_GAIN
    tokens = seconds * 100.0
    below = choose(Told(), tokens=int(tokens * 0.99), engines=1, gpu=False)
    above = choose(Told(), tokens=int(tokens * 1.01), engines=1, gpu=False)
    assert below.enforce_eager and not above.enforce_eager
    assert "45 s compile" in above.reason and "the cpu default" in above.reason


def test_a_known_cost_and_speed_move_the_line():
    tokens = 2_000 * 256  # 512k tokens: compiles at the CPU defaults
    assert not choose(Told(), tokens=tokens, engines=1, gpu=False).enforce_eager
    assert choose(Told(compile_seconds=900), tokens=tokens, engines=1, gpu=False).enforce_eager
    assert choose(Told(eager_tokens_per_second=5000), tokens=tokens, engines=1, gpu=False).enforce_eager
    # more engines share the work: each has less ahead
    assert choose(Told(), tokens=tokens, engines=32, gpu=False).enforce_eager


def test_gpu_engines_weigh_gpu_figures():
    gpu = PipelineSpec.model_validate({**spec().model_dump(mode="json"), "compute": {"gpus_per_actor": 1}})
    assert for_run(gpu, tokens=2_000 * 256, engines=1).enforce_eager  # 512k tokens are minutes on a GPU
    assert "gpu default" in for_run(gpu, tokens=2_000 * 256, engines=1).reason


def batch_line(i: int, **body) -> str:
    return json.dumps({"custom_id": f"r{i}", "body": {"messages": [{"role": "user", "content": f"say {i}"}], **body}})


def planned(tmp_path, lines: list[str], **spec) -> tuple[PipelineSpec, Plan]:
    """A provider batch file on a spec with every default but the model, read and planned as a run does."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "batch.jsonl").write_text("\n".join(lines) + "\n")
    batch = resolve_input(PipelineSpec(input={"kind": "openai_batch", "paths": str(tmp_path / "batch.jsonl")},
                                       model={"name": "tiny-random"}, output={"path": str(tmp_path / "out")}, **spec))
    return batch, prepare(batch)[1]


def test_a_provider_batch_on_a_default_spec_is_weighed_by_each_requests_own_limit(tmp_path):
    # OpenAI's meaning: a request without max_tokens runs up to the context (2,048 here, less its prompt).
    lines = [batch_line(i, max_tokens=5) for i in range(3)] + [batch_line(3, max_completion_tokens=7, n=2)]
    lines += [batch_line(4), batch_line(5)]
    spec, plan = planned(tmp_path, lines)
    assert spec.sampling.max_tokens is None and spec.model.enforce_eager is None
    ahead = tokens_ahead(spec, plan.units)
    assert 3 * 5 + 7 * 2 + 2 * 1900 < ahead <= 3 * 5 + 7 * 2 + 2 * 2048
    choice = for_run(spec, ahead, engines=1)
    assert choice.enforce_eager and f"about {ahead / 100:,.0f} s of decoding" in choice.reason
    # The same requests, many of them, are a long night's work: compiled.
    _, many = planned(tmp_path / "many", [batch_line(i) for i in range(200)])
    assert not for_run(spec, tokens_ahead(spec, many.units), engines=1).enforce_eager


def test_rows_own_limits_from_columns_and_a_retry_share(tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [0, 1, 2, 3], "text": ["x" * 40] * 4, "mt": [10, None, 20, 10**6],
                             "own": [None, '{"n": 3}', '{"max_tokens": 99}', None]}), tmp_path / "in" / "p.parquet")
    spec = PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text", "max_tokens_column": "mt",
                               "sampling_column": "own"},
                        model={"name": "tiny-random", "max_model_len": 110}, sampling={"max_tokens": None},
                        output={"path": str(tmp_path / "out")})
    _, plan = prepare(spec)
    # The room a prompt leaves in the context: row 1 runs to it, thrice; the column wins over
    # the row's own sampling; 10**6 is cut to the room.
    room = 110 - round(prompt_tokens_per_row(list_shards(spec.input)[0]))
    assert [u.decode_tokens for u in plan.units] == [10 + 3 * room + 20 + room]
    assert tokens_ahead(spec, plan.units, only_ids={plan.units[0].unit_id: pa.array([1, 3])}) == (30 + 4 * room) // 2
    # A unit planned before units kept their decode tokens counts each row to the context.
    old = [replace(u, decode_tokens=None) for u in plan.units]
    assert tokens_ahead(spec, old) == 4 * 110


def test_no_max_model_len_means_the_models_own_context(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"max_position_embeddings": 4096,
                                                            "text_config": {"max_position_embeddings": 1024}}))
    spec = PipelineSpec(input={"paths": "in/", "prompt_column": "text"}, sampling={"max_tokens": None},
                        model={"name": str(tmp_path / "m"), "max_model_len": None}, output={"path": "out/"})
    assert tokens_ahead(spec, [Unit("u", "p", 0, 10)]) == 10 * 1024  # the least length its config names
