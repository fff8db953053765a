"""OpenAI batch files of each endpoint, Ray-free: one endpoint per file, every field of
`/v1/completions` read by its effect or refused by name, and its output lines parsed with the
`openai` SDK's own types."""

from __future__ import annotations

import json

import pytest
from openai.types import Completion

from pipelines.formats import openai, openai_completions
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
             line("/v1/completions", "c", prompt="Once")]
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


def test_a_completions_body_maps_every_field_and_a_list_prompt_is_a_row_per_prompt():
    rows = rows_of(line("/v1/completions", prompt=["one", "two"], max_tokens=5, temperature=0.2, top_p=0.9, n=2,
                        stop=["\n"], seed=3, logprobs=2, presence_penalty=0.1, frequency_penalty=0.2, user="u",
                        model="m"))
    assert [r["prompt"] for r in rows] == ["one", "two"]
    assert [request_of(r["custom_id"]) for r in rows] == [("r1", 0, 2), ("r1", 1, 2)]
    assert json.loads(rows[0]["sampling"]) == {"max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "n": 2,
                                               "stop": ["\n"], "seed": 3, "logprobs": True, "top_logprobs": 2,
                                               "presence_penalty": 0.1, "frequency_penalty": 0.2}
    one, = rows_of(line("/v1/completions", prompt="solo", echo=True))
    assert (one["custom_id"], one["prompt"], one["echo"]) == ("r1", "solo", True)


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
