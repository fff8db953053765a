"""`task: embed` before any engine starts: the spec's options and what it refuses by name, a
model that cannot cut its vectors refused through the CLI, and OpenAI /v1/embeddings batch lines
both ways (each output line parsed with the openai SDK's own type)."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
from openai.types import CreateEmbeddingResponse

from pipelines.formats import openai_embeddings
from pipelines.planning.plan_run import plan_run
from pipelines.planning.units import fingerprint_parts
from pipelines.spec import PipelineSpec, SpecError
from spotbatch.errors import BatchFileError
from tests.conftest import write_shards
from tests.helpers import spotbatch, write_spec

BASE = {"input": {"paths": "in/", "prompt_column": "text"}, "output": {"path": "out/"}}


def spec(**fields) -> PipelineSpec:
    return PipelineSpec.model_validate({**BASE, "model": {"name": "all-minilm-l6-v2"}, **fields})


def test_embed_options_are_read_and_change_the_fingerprint_of_embedding_runs_only():
    embed = spec(task="embed", embed={"normalize": False, "truncate_prompt_tokens": -1})
    assert (embed.task, embed.embed.normalize, embed.embed.truncate_prompt_tokens) == ("embed", False, -1)
    other = spec(task="embed", embed={"normalize": True})
    assert fingerprint_parts(embed, [])["embed"] != fingerprint_parts(other, [])["embed"]
    assert "embed" not in fingerprint_parts(spec(), [])  # generation runs' fingerprints are as they were
    # A spec written back out (every field at its default) reads back the same.
    assert PipelineSpec.model_validate(embed.model_dump(mode="json")) == embed
    # An embedding model keeps its own context (all-MiniLM-L6-v2's is 256: generation's 2048 would
    # stop its engine from starting); a spec with no model gets the built-in embedding model.
    assert embed.model.max_model_len is None and spec().model.max_model_len == 2048
    bare = PipelineSpec.model_validate({**BASE, "task": "embed"})
    assert (bare.model.name, bare.model.max_model_len) == ("all-minilm-l6-v2", None)


@pytest.mark.parametrize(("fields", "message"), [
    ({"task": "embed", "sampling": {"temperature": 0.5}}, "sampling.temperature is set, but task embed samples"),
    ({"task": "embed", "sampling": {"max_tokens": 9}}, "sampling.max_tokens is set, but task embed samples"),
    ({"task": "embed", "input": {**BASE["input"], "system_prompt": "Be brief."}},
     "input.system_prompt is set, but an embedding has no system message"),
    ({"embed": {"dimensions": 64}}, "embed.dimensions is set, but task is generate"),
    ({"task": "embed", "embed": {"truncate_prompt_tokens": 0}}, "embed.truncate_prompt_tokens: must be a number"),
    ({"task": "embed", "embed": {"dimensions": 0}}, "embed.dimensions must be > 0"),
    ({"task": "rerank"}, "task: Input should be 'generate' or 'embed'"),
    ({"task": "embed", "model": {"name": "all-minilm-l6-v2", "chat_template": "query: {{ messages }}"}},
     "model.chat_template is set, but the text is embedded as it is, with no chat template"),
    ({"task": "embed", "model": {"name": "all-minilm-l6-v2", "chat_template_kwargs": {"x": 1}}},
     "model.chat_template_kwargs is set, but the text is embedded as it is"),
])
def test_fields_the_task_would_drop_are_refused_by_name(fields, message):
    with pytest.raises(SpecError, match=message):
        spec(**fields)


def test_dimensions_on_a_model_not_trained_for_them_is_refused_before_any_engine(tmp_path, minilm):
    write_shards(tmp_path / "in", [{"id": i, "text": f"t{i}"} for i in range(3)], 1)
    data = {**BASE, "task": "embed", "embed": {"dimensions": 128}, "model": {"name": "all-minilm-l6-v2"},
            "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"}, "output": {"path": str(tmp_path / "o")}}
    proc = spotbatch("run", str(write_spec(tmp_path / "spec.yaml", data)))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "embed.dimensions: 128 cannot be honoured: model 'all-minilm-l6-v2' is not trained for Matryoshka" \
        in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "o").exists()
    # The same folder declared Matryoshka (as a model trained for it says in its config.json) plans.
    folder = tmp_path / "mrl"
    shutil.copytree(minilm, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [64, 128, 384]}))
    planned, _, plan = plan_run(PipelineSpec.model_validate({**data, "model": {"name": str(folder)}}))
    assert planned.embed.dimensions == 128 and plan.input_rows == 3
    with pytest.raises(SpecError, match=r"allows dimensions \[64, 128, 384\] only"):
        plan_run(PipelineSpec.model_validate({**data, "model": {"name": str(folder)}, "embed": {"dimensions": 100},
                                              "output": {"path": str(tmp_path / "o2")}}))


def test_dimensions_are_checked_on_the_models_own_config_even_before_it_is_built_here(tmp_path, monkeypatch):
    """A driver that never built the built-in model (a fresh notebook, a job's head node) refuses
    a dimensions it cannot honour all the same: the config comes with the model's pinned source."""
    monkeypatch.setenv("SPOTBATCH_MODELS", str(tmp_path / "models"))
    write_shards(tmp_path / "in", [{"id": 1, "text": "t"}], 1)
    data = {**BASE, "task": "embed", "embed": {"dimensions": 128},
            "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"}, "output": {"path": str(tmp_path / "o")}}
    with pytest.raises(SpecError, match="embed.dimensions: 128 cannot be honoured: model 'all-minilm-l6-v2'"):
        plan_run(PipelineSpec.model_validate(data))
    assert not (tmp_path / "o").exists()


def batch_spec(tmp_path) -> dict:
    return {"input": {"paths": str(tmp_path / "b.jsonl"), "kind": "openai_batch"},
            "model": {"name": "all-minilm-l6-v2"}, "output": {"path": str(tmp_path / "o")}}


def line(custom_id: str, body: dict, url: str = "/v1/embeddings") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def test_an_embeddings_file_plans_an_embed_run_a_row_per_input(tmp_path):
    (tmp_path / "b.jsonl").write_text("\n".join([
        line("one", {"model": "m", "input": "a text", "user": "u-1"}),
        line("many", {"input": ["first", "second", [101, 2117, 102]], "encoding_format": "base64"}),
    ]) + "\n")
    data = batch_spec(tmp_path)
    planned, _, plan = plan_run(PipelineSpec.model_validate(data))
    assert planned.task == "embed" and plan.input_rows == 4 and planned.model.max_model_len is None
    assert planned.input.prompt_column == "input" and planned.input.format == "messages"
    with pytest.raises(SpecError, match="task is generate, but the batch files' requests are /v1/embeddings"):
        plan_run(PipelineSpec.model_validate({**data, "task": "generate", "output": {"path": str(tmp_path / "o2")}}))


def test_an_embeddings_file_without_a_model_runs_the_built_in_embedding_model_at_its_own_context(tmp_path):
    """No model in the spec is the built-in embedding model, as `task: embed` has it, never the
    chat model generation defaults to (whose pooled vectors would be wrong without an error);
    a routed spec's models keep their own context too."""
    (tmp_path / "b.jsonl").write_text(line("one", {"model": "mini", "input": "a text"}) + "\n")
    bare = {"input": {"paths": str(tmp_path / "b.jsonl"), "kind": "openai_batch"},
            "output": {"path": str(tmp_path / "o")}}
    planned, store, _ = plan_run(PipelineSpec.model_validate(bare))
    assert (planned.model.name, planned.model.max_model_len) == ("all-minilm-l6-v2", None)
    assert "all-minilm-l6-v2" in json.dumps(store.read_manifest()["models"])  # the model pinned is the one run
    routed = {**bare, "models": {"mini": {"name": "all-minilm-l6-v2"}}, "output": {"path": str(tmp_path / "o2")}}
    planned, _, _ = plan_run(PipelineSpec.model_validate(routed))
    assert planned.models["mini"].max_model_len is None


def test_an_embeddings_file_routed_to_named_models_keeps_each_models_own_context(tmp_path):
    """With `models` (as `spotbatch serve` runs a batch), each embedding model left without
    max_model_len keeps its own context, as `model` does (generation's 2048 would stop
    all-MiniLM-L6-v2's engine from starting: its context is 512)."""
    (tmp_path / "b.jsonl").write_text(line("one", {"model": "small", "input": "a text"}) + "\n")
    data = {**batch_spec(tmp_path), "models": {"small": {"name": "all-minilm-l6-v2"},
                                               "set": {"name": "all-minilm-l6-v2", "max_model_len": 128}}}
    del data["model"]
    planned, _, _ = plan_run(PipelineSpec.model_validate(data))
    assert planned.task == "embed" and planned.models["small"].max_model_len is None
    assert planned.models["set"].max_model_len == 128


def test_a_line_asking_dimensions_the_model_cannot_honour_is_refused_before_any_engine(tmp_path, minilm):
    (tmp_path / "b.jsonl").write_text("\n".join([
        line("plain", {"input": "a text"}), line("cut", {"input": ["first", "second"], "dimensions": 128}),
        line("whole", {"input": "a text", "dimensions": 384}),
    ]) + "\n")
    data = batch_spec(tmp_path)
    proc = spotbatch("run", str(write_spec(tmp_path / "spec.yaml", data)))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (f"{tmp_path / 'b.jsonl'} line 2: body.dimensions: 128 cannot be honoured: model 'all-minilm-l6-v2' "
            "is not trained for Matryoshka") in proc.stderr, proc.stderr[-2000:]
    # The same folder declared Matryoshka plans, each row with its own dimensions.
    folder = tmp_path / "mrl"
    shutil.copytree(minilm, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [128, 384]}))
    declared = {**data, "model": {"name": str(folder)}, "output": {"path": str(tmp_path / "o2")}}
    assert plan_run(PipelineSpec.model_validate(declared))[2].input_rows == 4
    with pytest.raises(BatchFileError, match=r"b.jsonl line 2: body.dimensions: 128 cannot be honoured: model .* "
                                             r"allows dimensions \[64, 384\] only"):
        (folder / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [64, 384]}))
        plan_run(PipelineSpec.model_validate({**declared, "output": {"path": str(tmp_path / "o3")}}))


@pytest.mark.parametrize(("body", "message"), [
    ({"input": "x", "encoding_format": "int8"}, "body.encoding_format must be float or base64, got 'int8'"),
    ({"input": "x", "dimensions": 0}, "body.dimensions must be a whole number >= 1, got 0"),
    ({"input": "x", "dimensions": "8"}, 'body.dimensions must be a whole number >= 1, got "8"'),
    ({"input": {"text": "x"}}, "body.input must be a text, a list of texts, or token ids"),
    ({"input": ["x", [1, -2]]}, r"body.input\[1\] must be a text or a non-empty list of token ids"),
    ({"input": "x", "truncate": True}, "field body.truncate is not an OpenAI embeddings field"),
])
def test_a_bad_embeddings_line_is_refused_naming_file_line_and_field(tmp_path, body, message):
    (tmp_path / "b.jsonl").write_text(line("ok", {"input": "fine"}) + "\n" + line("bad", body) + "\n")
    data = batch_spec(tmp_path)
    with pytest.raises(BatchFileError, match=f"b.jsonl line 2: {message}"):
        plan_run(PipelineSpec.model_validate(data))


def parse_embeddings(body: dict) -> CreateEmbeddingResponse:
    """An embedding response as the openai SDK reads it: base64 vectors decoded as its client
    decodes them (little-endian float32), then its own type."""
    data = [{**d, "embedding": np.frombuffer(base64.b64decode(d["embedding"]), dtype="float32").tolist()}
            if isinstance(d["embedding"], str) else d for d in body["data"]]
    return CreateEmbeddingResponse.model_validate({**body, "data": data})


def test_output_lines_are_openai_embedding_responses_in_input_order():
    vectors = [[0.5, -0.25, 0.125], [1.0, 0.0, -1.0]]
    rows = [({"embedding": v, "prompt_tokens": 3 + i, "error": None, "model": "m"}, {"encoding_format": fmt})
            for i, (v, fmt) in enumerate(zip(vectors, ["float", "base64"]))]
    got, failed = openai_embeddings.output_line("r1", rows, 0)
    assert not failed
    parsed = parse_embeddings(got["response"]["body"])
    assert [d.index for d in parsed.data] == [0, 1] and [d.embedding for d in parsed.data] == vectors
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens == 7
    bad = [rows[0], ({"embedding": None, "prompt_tokens": 0, "error": "too long", "error_class": "context_too_long",
                      "model": "m"}, {})]
    got, failed = openai_embeddings.output_line("r2", bad, 0)
    assert failed and got["error"]["message"] == "context_too_long: too long"


def test_an_embed_run_plans_its_units_by_their_input_alone(tmp_path):
    write_shards(tmp_path / "in", [{"id": i, "text": f"a short text to embed, number {i}"} for i in range(400)], 1)
    data = {"task": "embed", "model": {"name": "all-minilm-l6-v2"}, "compute": {"tokens_per_unit": 300},
            "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"}, "output": {"path": str(tmp_path / "o")}}
    _, _, plan = plan_run(PipelineSpec.model_validate(data))
    # About 9 tokens a row: 300-token units hold dozens of rows (counting sampling.max_tokens, one row each).
    assert all(u.decode_tokens == 0 for u in plan.units) and 10 <= len(plan.units) <= 40, len(plan.units)
