"""OpenAI batch files of each endpoint, Ray-free: one endpoint per file, every field of
`/v1/completions` and `/v1/responses` read by its effect or refused by name, and their output
lines parsed with the `openai` SDK's own types."""

from __future__ import annotations

import json

import pytest
from openai.types import Completion
from openai.types.responses import Response

from pipelines.formats import openai, openai_completions, openai_responses
from pipelines.formats.batch_files import resolve_input
from pipelines.formats.lines import request_of
from pipelines.planning.inputs import InputError
from pipelines.run import run
from pipelines.spec import PipelineSpec


def line(url: str, custom_id: str = "r1", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def rows_of(request: dict) -> list[dict]:
    return openai.read_request(request, "f line 1", None)[1]


def spec_for(tmp_path, batch) -> PipelineSpec:
    return PipelineSpec(input={"kind": "openai_batch", "paths": str(batch)}, model={"name": "tiny-random"},
                        output={"path": str(tmp_path / "out")})


def test_a_file_that_mixes_endpoints_is_refused_naming_the_first_line_that_differs(tmp_path):
    batch = tmp_path / "batch.jsonl"
    lines = [line("/v1/chat/completions", "a", messages=[{"role": "user", "content": "hi"}]),
             line("/v1/chat/completions", "b", messages=[{"role": "user", "content": "ho"}]),
             line("/v1/completions", "c", prompt="Once"), line("/v1/responses", "d", input="x")]
    batch.write_text("\n".join(map(json.dumps, lines)) + "\n")
    with pytest.raises(InputError, match=r"batch.jsonl line 3: url /v1/completions differs from \S*batch.jsonl "
                                         r"line 1's /v1/chat/completions: a batch holds one endpoint's requests"):
        run(spec_for(tmp_path, batch))
    assert not list(tmp_path.rglob("*.parquet"))  # refused before anything was written


def test_a_completions_file_is_read_as_raw_prompts_with_openais_defaults(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(line("/v1/completions", "r1", prompt="Once upon")) + "\n")
    spec = resolve_input(spec_for(tmp_path, batch))
    assert (spec.input.prompt_column, spec.input.format) == ("prompt", "raw")  # no chat template
    assert spec.sampling.max_tokens == 16 and spec.sampling.temperature == 1.0  # OpenAI's completion defaults


def test_a_file_without_request_lines_reads_as_chat_completions_as_before(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n")
    assert resolve_input(spec_for(tmp_path, batch)).input.format == "messages"


def test_a_completions_body_maps_every_field_and_a_list_prompt_is_a_row_per_prompt():
    rows = rows_of(line("/v1/completions", prompt=["one", "two"], max_tokens=5, temperature=0.2, top_p=0.9, n=2,
                        stop=["\n"], seed=3, logprobs=2, presence_penalty=0.1, frequency_penalty=0.2, user="u",
                        model="m"))
    assert [r["prompt"] for r in rows] == ["one", "two"]
    assert [request_of(r["custom_id"]) for r in rows] == [("r1", 0, 2), ("r1", 1, 2)]
    assert json.loads(rows[0]["sampling"]) == {"max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "n": 2,
                                               "stop": ["\n"], "seed": 3, "logprobs": True, "top_logprobs": 2,
                                               "presence_penalty": 0.1, "frequency_penalty": 0.2}
    one, = rows_of(line("/v1/completions", prompt="solo", echo=True, temperature=None, max_tokens=None))
    assert (one["custom_id"], one["prompt"], one["echo"]) == ("r1", "solo", True)
    unset, = rows_of(line("/v1/completions", prompt="solo", echo=None))  # null: OpenAI's default, as every field
    assert unset["echo"] is False
    assert json.loads(one["sampling"]) == {}  # null is the field left out: OpenAI's default


@pytest.mark.parametrize("body, named", [
    ({"suffix": "end"}, "field body.suffix cannot be honoured: text after the insertion point"),
    ({"best_of": 3}, "field body.best_of cannot be honoured"),
    ({"logit_bias": {"1": 2}}, "field body.logit_bias cannot be honoured"),
    ({"stream": True}, "field body.stream cannot be honoured"),
    ({"frobnicate": 1}, "field body.frobnicate is not an OpenAI completion field"),
    ({"prompt": [1, 2, 3]}, r"field body.prompt\[0\] cannot be honoured: token ids are OpenAI's"),
    ({"prompt": {"text": "x"}}, "body.prompt must be a string or a list of strings, got an object"),
    ({"logprobs": True}, "body.logprobs must be an integer"),
    ({"echo": True, "logprobs": 1}, "field body.echo with body.logprobs cannot be honoured"),
    ({"echo": "yes"}, "body.echo must be true or false"),
])
def test_a_completions_field_that_cannot_be_honoured_is_refused_by_name(body, named):
    with pytest.raises(InputError, match=f"f line 1: {named}"):
        rows_of(line("/v1/completions", **{"prompt": "x", **body}))


def test_a_custom_id_that_reads_as_a_row_of_a_list_prompt_is_refused():
    with pytest.raises(InputError, match="custom_id .* reads as spotbatch's name for one row"):
        rows_of(line("/v1/completions", custom_id=json.dumps(["r1", 0, 2]), prompt="x"))


SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def test_a_responses_body_maps_input_instructions_and_text_format():
    row, = rows_of(line("/v1/responses", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
        {"role": "user", "content": "three"}],
        instructions="Be terse.", max_output_tokens=7, temperature=0.3, top_p=0.8, metadata={"k": "v"}, store=False,
        text={"format": {"type": "json_schema", "name": "a", "schema": SCHEMA, "strict": True}}))
    assert json.loads(row["messages"]) == [{"role": "system", "content": "Be terse."},
                                           {"role": "user", "content": "one\ntwo"},
                                           {"role": "assistant", "content": "ok"}, {"role": "user", "content": "three"}]
    assert json.loads(row["sampling"]) == {"max_tokens": 7, "temperature": 0.3, "top_p": 0.8, "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}}
    assert json.loads(row["metadata"]) == {"k": "v"}
    plain, = rows_of(line("/v1/responses", input="hello", text={"format": {"type": "json_object"}}))
    assert json.loads(plain["messages"]) == [{"role": "user", "content": "hello"}]
    assert json.loads(plain["sampling"]) == {"response_format": {"type": "json_object"}}


@pytest.mark.parametrize("body, named", [
    ({"tools": [{"type": "web_search"}]}, r"field body.tools\[0\] type 'web_search' cannot be honoured: only "
                                          "function tools"),
    ({"previous_response_id": "resp_1"}, "field body.previous_response_id cannot be honoured"),
    ({"background": True}, "field body.background cannot be honoured"),
    ({"store": True}, "field body.store cannot be honoured"),
    ({"reasoning": {"effort": "low"}}, "field body.reasoning cannot be honoured: reasoning effort is not a setting"),
    ({"frobnicate": 1}, "field body.frobnicate is not an OpenAI Responses field"),
    ({"metadata": {"n": 1}}, "body.metadata.n must be a string of at most 512 characters, got a number"),
    ({"metadata": ["a"]}, "body.metadata must be an object of strings, got a list"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "body.metadata has 17 keys; at most 16"),
    ({"text": {"verbosity": "low"}}, "field body.text.verbosity is not an OpenAI Responses field"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]},
     r"body.input\[0\].type 'item_reference' cannot be honoured"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
     r"body.input\[0\].content\[0\].type 'input_image' cannot be honoured"),
])
def test_a_responses_field_that_cannot_be_honoured_is_refused_by_name(body, named):
    with pytest.raises(InputError, match=f"f line 1: {named}"):
        rows_of(line("/v1/responses", **{"input": "x", **body}))


def result(text: str, finish: str = "stop", **extra) -> dict:
    return {"output": text, "prompt_tokens": 3, "completion_tokens": 2, "cached_prompt_tokens": 1,
            "finish_reason": finish, "error": None, "error_class": None, "model": "smollm2-135m", "choices": None,
            "logprobs": None, **extra}


def test_completions_output_lines_parse_as_the_sdks_completion():
    two = [{"text": "a", "finish_reason": "stop", "completion_tokens": 1, "stop_sequence": None},
           {"text": "b", "finish_reason": "length", "completion_tokens": 1, "stop_sequence": None}]
    logprobs = [[{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}]}],
                [{"token": "b", "logprob": -0.3, "top_logprobs": [{"token": "b", "logprob": -0.3}]}]]
    rows = [(result("a", choices=two, logprobs=logprobs), {"prompt": "P1", "echo": True}),
            (result("c", finish="length"), {"prompt": "P2", "echo": True})]
    line_out, failed = openai_completions.output_line("r1", rows, 5)
    body = Completion.model_validate(line_out["response"]["body"])
    assert not failed and [(c.index, c.text, c.finish_reason) for c in body.choices] == [
        (0, "P1a", "stop"), (1, "P1b", "length"), (2, "P2c", "length")]  # prompt by prompt, then n
    assert body.choices[0].logprobs.text_offset == [2] and body.choices[1].logprobs.top_logprobs == [{"b": -0.3}]
    assert body.usage.total_tokens == 10 and body.object == "text_completion"
    errored, failed = openai_completions.output_line("r2", [rows[0], ({**rows[1][0], "error": "e",
                                                                       "error_class": "bad_input"}, {})], 5)
    assert failed and errored["error"]["message"] == "bad_input: e"


def test_responses_output_lines_parse_as_the_sdks_response():
    line_out, _ = openai_responses.output_line("r1", [(result('{"a": 1}'), {"metadata": '{"k": "v"}'})], 5)
    body = Response.model_validate(line_out["response"]["body"])
    assert (body.status, body.output_text, body.metadata, body.usage.input_tokens_details.cached_tokens) == (
        "completed", '{"a": 1}', {"k": "v"}, 1)
    cut = Response.model_validate(openai_responses.output_line("r2", [(result("x", "length"), {})], 5)[0]
                                  ["response"]["body"])
    assert (cut.status, cut.incomplete_details.reason, cut.output[0].status) == (
        "incomplete", "max_output_tokens", "incomplete")


def answered_by_hand(tmp_path, lines: list[dict], units: slice | list[int] = slice(None), kind: str = "openai_batch",
                     out: str | None = None, failing: frozenset[str] = frozenset()) -> str:
    """An output (at `out`, or tmp_path/out) of the batch `lines`, planned a row per unit, its
    `units` committed without an engine as if the model had answered "X" to every row but the
    rows named in `failing`, which are error records."""
    import pyarrow as pa

    from operators.generate import RESULT_SCHEMA, empty_results
    from pipelines.planning.plan_run import plan_run
    from pipelines.store.counts import UnitCounts
    from pipelines.stream.unit_rows import read_unit_rows

    tmp_path.mkdir(exist_ok=True)
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = out or str(tmp_path / "out")
    spec = PipelineSpec(input={"kind": kind, "paths": str(batch)}, model={"name": "tiny-random"},
                        compute={"tokens_per_unit": 1}, output={"path": out})
    _, store, plan = plan_run(spec)
    for unit in plan.units[units] if isinstance(units, slice) else [plan.units[i] for i in units]:
        ids = read_unit_rows(unit.path, unit.start, unit.stop, ["custom_id"], {}).column("custom_id")
        n = len(ids)
        errors = ["failed by hand" if i in failing else None for i in ids.to_pylist()]
        cols = {**empty_results(errors), "output": [None if e else "X" for e in errors], "prompt_tokens": [2] * n,
                "completion_tokens": [1] * n, "finish_reason": ["stop"] * n, "served_from": ["engine"] * n}
        store.commit(unit.unit_id, pa.table({"custom_id": ids, **{f.name: pa.array(cols[f.name], f.type)
                                                                  for f in RESULT_SCHEMA},
                                             "model": ["m"] * n, "spec_fingerprint": [plan.fingerprint] * n}),
                     UnitCounts.of_results(cols, 0.0).to_json())
    return out


def test_an_export_puts_a_list_prompts_rows_back_together_as_one_text_completion(tmp_path):
    from spotbatch import export

    out = answered_by_hand(tmp_path, [line("/v1/completions", "a", prompt=["p0", "p1", "p2"], echo=True),
                                      line("/v1/completions", "b", prompt="q")])
    counts = export(out, "openai-batch", str(tmp_path / "o.jsonl"))
    bodies = {x["custom_id"]: Completion.model_validate(x["response"]["body"])
              for x in map(json.loads, (tmp_path / "o.jsonl").read_text().splitlines())}
    assert (counts["rows"], counts["written"]) == (4, 4)
    assert [(c.index, c.text) for c in bodies["a"].choices] == [(0, "p0X"), (1, "p1X"), (2, "p2X")]
    assert [c.text for c in bodies["b"].choices] == ["X"] and bodies["a"].usage.prompt_tokens == 6
    # A partial export leaves out a request whose rows are not all committed, rather than half of it.
    out = answered_by_hand(tmp_path / "partial", [line("/v1/completions", "a", prompt=["p0", "p1", "p2"]),
                                                  line("/v1/completions", "b", prompt="q")], slice(1, None))
    counts = export(out, "openai-batch", str(tmp_path / "p.jsonl"), partial=True)
    assert (counts["written"], counts["skipped"]) == (1, 2)  # rows: b's, and a's two committed
    assert [x["custom_id"] for x in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())] == ["b"]


def test_an_export_of_a_responses_batch_returns_each_requests_metadata(tmp_path):
    from spotbatch import export

    out = answered_by_hand(tmp_path, [line("/v1/responses", "r", input="hi", metadata={"team": "a"})])
    export(out, "openai-batch", str(tmp_path / "o.jsonl"))
    body = Response.model_validate(json.loads((tmp_path / "o.jsonl").read_text())["response"]["body"])
    assert (body.output_text, body.metadata, body.status) == ("X", {"team": "a"}, "completed")


def test_an_anthropic_batch_exports_as_openai_chat_completions_as_it_always_did(tmp_path):
    from openai.types.chat import ChatCompletion

    from spotbatch import export

    request = {"custom_id": "a1", "params": {"model": "m", "max_tokens": 8,
                                             "messages": [{"role": "user", "content": "hi"}]}}
    out = answered_by_hand(tmp_path, [request], kind="anthropic_batch")
    assert export(out, "openai-batch", str(tmp_path / "o.jsonl"))["written"] == 1
    (line_,) = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert line_["custom_id"] == "a1"
    assert ChatCompletion.model_validate(line_["response"]["body"]).choices[0].message.content == "X"
