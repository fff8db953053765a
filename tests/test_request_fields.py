"""Every request field honoured, checked by its effect, not its presence (real vLLM engine,
SmolLM2): an OpenAI batch file that uses every field and an Anthropic one, run and exported
both ways; per-row sampling from a Parquet column, with bad overrides as error records."""

from __future__ import annotations

import json

import jsonschema
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipelines.run import run
from pipelines.spec import PipelineSpec
from tests.helpers import spotbatch, write_spec

pytestmark = pytest.mark.engine

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}
ASK = [{"role": "user", "content": "Name a large city and its population."}]


def line(custom_id: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "gpt-4o-mini", "messages": ASK, "max_completion_tokens": 24, **body}})


OPENAI_LINES = [
    line("schema", max_completion_tokens=80, temperature=0,
         response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}),
    line("object", max_completion_tokens=120, temperature=0, response_format={"type": "json_object"},
         messages=[{"role": "user", "content": [{"type": "text", "text": "Reply with a JSON object"},
                                                {"type": "text", "text": "whose one key is a and value is 1."}]}]),
    line("three", n=3, temperature=0.9, seed=7),
    line("logprobs", temperature=0, logprobs=True, top_logprobs=3, max_tokens=6, max_completion_tokens=6),
    line("stopped", temperature=0, stop=["e"], max_completion_tokens=40),
    line("seeded-a", temperature=1.0, seed=11, top_p=0.95, presence_penalty=0.5, frequency_penalty=0.5),
    line("seeded-b", temperature=1.0, seed=11, top_p=0.95, presence_penalty=0.5, frequency_penalty=0.5),
    line("greedy", temperature=0),
    line("bad-temperature", temperature=7),  # refused at OpenAI for this request alone: an error record
]


def spec_for(tmp_path, kind, batch, out="out", **extra):
    return PipelineSpec(input={"kind": kind, "paths": str(batch)},
                        model={"name": "smollm2-135m", "enforce_eager": True, "max_model_len": 512},
                        compute={"engine_threads": 2}, output={"path": str(tmp_path / out)}, **extra)


def test_an_openai_batch_file_using_every_field(tmp_path, ray_cluster, smollm2):
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(OPENAI_LINES) + "\n")
    # No dedup: two seeded requests alike must reproduce in the engine, not be answered once.
    summary = run(spec_for(tmp_path, "openai_batch", batch, cache={"dedup": False}), address=ray_cluster)
    assert summary.finished and summary.errors_by_class == {"bad_input": 1}, summary
    rows = {r["custom_id"]: r for r in ds.dataset(str(tmp_path / "out")).to_table().to_pylist()}

    assert jsonschema.validate(json.loads(rows["schema"]["output"]), SCHEMA) is None
    assert rows["schema"]["finish_reason"] == "stop"
    assert isinstance(json.loads(rows["object"]["output"]), dict)
    three = rows["three"]["choices"]
    assert len(three) == 3 and rows["three"]["output"] == three[0]["text"]
    assert rows["three"]["completion_tokens"] == sum(c["completion_tokens"] for c in three)  # every choice counts
    (per_token,) = rows["logprobs"]["logprobs"]
    assert len(per_token) == rows["logprobs"]["completion_tokens"] == 6
    assert all(len(t["top_logprobs"]) == 3 and t["logprob"] <= 0 for t in per_token)
    assert "".join(t["token"] for t in per_token) == rows["logprobs"]["output"]
    greedy_first = max(per_token[0]["top_logprobs"], key=lambda t: t["logprob"])
    assert per_token[0]["token"] == greedy_first["token"]  # temperature 0 takes the likeliest
    stopped = rows["stopped"]
    assert "e" not in stopped["output"] and stopped["finish_reason"] == "stop" and stopped["stop_sequence"] == "e"
    assert rows["seeded-a"]["output"] == rows["seeded-b"]["output"] != rows["greedy"]["output"]
    assert rows["seeded-a"]["served_from"] == rows["seeded-b"]["served_from"] == "engine"
    assert rows["bad-temperature"]["error_class"] == "bad_input" and "temperature" in rows["bad-temperature"]["error"]
    assert all(r["queued_s"] is not None and r["generate_s"] > 0 for r in rows.values() if r["error"] is None
               and r["served_from"] == "engine")

    out = tmp_path / "results.jsonl"
    assert spotbatch("export", str(tmp_path / "out"), "--format", "openai-batch", "--to", str(out)).returncode == 0
    lines = {json.loads(x)["custom_id"]: json.loads(x) for x in out.read_text().splitlines()}
    body = lines["three"]["response"]["body"]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2] and body["model"] == "smollm2-135m"
    content = lines["logprobs"]["response"]["body"]["choices"][0]["logprobs"]["content"]
    assert len(content) == 6 and all(len(t["top_logprobs"]) == 3 and "bytes" in t for t in content)
    assert lines["stopped"]["response"]["body"]["choices"][0]["finish_reason"] == "stop"
    errors = [json.loads(x) for x in (tmp_path / "results.errors.jsonl").read_text().splitlines()]
    assert [e["custom_id"] for e in errors] == ["bad-temperature"]
    train = tmp_path / "train.jsonl"
    assert spotbatch("export", str(tmp_path / "out"), "--format", "chat-jsonl", "--to", str(train),
                     "--include-truncated").returncode == 0
    assert len(train.read_text().splitlines()) == 8 + 2  # one example per choice: "three" gives three


def test_a_file_with_tools_on_a_model_without_a_tool_parser_is_refused_by_name_before_anything_is_written(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text(line("ok") + "\n" + line("tool", tools=[{"type": "function", "function": {"name": "f"}}]) + "\n")
    write_spec(tmp_path / "spec.yaml", spec_for(tmp_path, "openai_batch", batch).model_dump(mode="json"))
    proc = spotbatch("run", str(tmp_path / "spec.yaml"))
    assert proc.returncode == 2, proc.stderr
    # No tool_choice: OpenAI's default, auto, which needs the model's tool parser.
    assert ("batch.jsonl line 2: tools cannot be honoured: tool_choice auto (OpenAI's default when tools are "
            "given) needs model.tool_parser") in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]
    batch.write_text(line("img", messages=image) + "\n")
    proc = spotbatch("run", str(tmp_path / "spec.yaml"))
    assert proc.returncode == 2 and "body.messages[0].content[0].type 'image_url' cannot be honoured" in proc.stderr


def test_an_anthropic_batch_file_both_ways(tmp_path, ray_cluster, smollm2):
    def request(custom_id, **params):
        return json.dumps({"custom_id": custom_id, "params": {
            "model": "claude-haiku-4-5", "max_tokens": 24, "messages": ASK, **params}})
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join([
        request("plain", temperature=0, system="Answer in one short sentence."),
        request("stopped", temperature=0, stop_sequences=["e"]),
        request("short", temperature=0, max_tokens=3, top_k=5, top_p=0.9,
                system=[{"type": "text", "text": "Be brief."}], metadata={"user_id": "u1"}),
        request("blocks", temperature=0, messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]),
    ]) + "\n")
    assert run(spec_for(tmp_path, "anthropic_batch", batch), address=ray_cluster).finished
    out = tmp_path / "results.jsonl"
    assert spotbatch("export", str(tmp_path / "out"), "--format", "anthropic-batch", "--to", str(out)).returncode == 0
    results = {json.loads(x)["custom_id"]: json.loads(x)["result"] for x in out.read_text().splitlines()}
    assert {r["type"] for r in results.values()} == {"succeeded"}
    stopped = results["stopped"]["message"]
    assert stopped["stop_reason"] == "stop_sequence" and stopped["stop_sequence"] == "e"
    assert "e" not in stopped["content"][0]["text"]
    short = results["short"]["message"]
    assert short["stop_reason"] == "max_tokens" and short["usage"]["output_tokens"] == 3
    assert results["plain"]["message"]["content"][0]["type"] == "text"
    assert results["plain"]["message"]["model"] == "smollm2-135m"
    batch.write_text(request("think", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}) + "\n")
    write_spec(tmp_path / "spec.yaml", spec_for(tmp_path, "anthropic_batch", batch, out="out2").model_dump(mode="json"))
    proc = spotbatch("run", str(tmp_path / "spec.yaml"))
    assert proc.returncode == 2 and "line 1: field params.thinking cannot be honoured" in proc.stderr, proc.stderr


def test_per_row_sampling_from_a_parquet_column(tmp_path, ray_cluster, smollm2):
    (tmp_path / "in").mkdir()
    rows = [
        {"id": 0, "text": "Is the sky blue? Answer yes or no.",
         "params": json.dumps({"structured": {"choice": ["yes", "no"]}})},
        {"id": 1, "text": "Write a code like 123-ab.",
         "params": json.dumps({"structured": {"regex": "[0-9]{3}-[a-z]{2}"}})},
        {"id": 2, "text": "Say hello.", "params": json.dumps({"n": 2, "temperature": 0.8, "seed": 3})},
        {"id": 3, "text": "Say hello.", "params": None},
        {"id": 4, "text": "Say hello.", "params": json.dumps({"temprature": 0.5})},  # a typo: an error record
        {"id": 5, "text": "Say hello.", "params": json.dumps({"top_k": -4})},
        {"id": 6, "text": "Say hello.", "params": "{not json"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "part-0.parquet")
    spec = PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text", "sampling_column": "params"},
                        model={"name": "smollm2-135m", "enforce_eager": True, "max_model_len": 512},
                        sampling={"max_tokens": 12}, compute={"engine_threads": 2},
                        output={"path": str(tmp_path / "out")})
    assert run(spec, address=ray_cluster).finished
    got = {r["id"]: r for r in ds.dataset(str(tmp_path / "out")).to_table().to_pylist()}
    assert got[0]["output"] in ("yes", "no")
    assert len(got[1]["output"]) == 6 and got[1]["output"][3] == "-" and got[1]["output"][:3].isdigit()
    assert len(got[2]["choices"]) == 2 and got[3]["choices"] is None
    assert got[4]["error_class"] == "bad_input" and "params: temprature is not a known field" in got[4]["error"]
    assert got[5]["error_class"] == "bad_input" and "top_k must be >= 1" in got[5]["error"]
    assert got[6]["error_class"] == "bad_input" and "params: is not JSON" in got[6]["error"]

    # The typo fixed in the input is a new run; --retry-failed on this one keeps every new column.
    proc = spotbatch("run", "--retry-failed", str(tmp_path / "out"), "--address", ray_cluster)
    assert proc.returncode in (0, 3, 1), proc.stderr
    again = {r["id"]: r for r in ds.dataset(str(tmp_path / "out")).to_table().to_pylist()}
    assert len(again[2]["choices"]) == 2 and again[0]["output"] == got[0]["output"]
