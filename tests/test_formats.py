"""The providers' request lines and result lines, Ray-free: every field mapped or refused by
name, and result lines in each provider's shape."""

from __future__ import annotations

import json

import pytest

from pipelines.formats import anthropic, openai, openai_chat
from pipelines.planning.inputs import InputError
from pipelines.spec import PipelineSpec


def test_an_openai_body_maps_onto_the_rows_sampling_and_messages():
    _, (row,) = openai.read_request({"custom_id": "a", "url": "/v1/chat/completions", "body": {
        "model": "m1", "max_completion_tokens": 9, "temperature": 0.3, "top_p": 0.8, "seed": 4, "stop": "x", "n": 2,
        "logprobs": True, "top_logprobs": 1, "presence_penalty": 0.1, "frequency_penalty": 0.2, "user": "u",
        "response_format": {"type": "json_object"},
        "messages": [{"role": "developer", "content": "Be terse."},
                     {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}]}},
        "f line 1", None)
    assert json.loads(row["sampling"]) == {"max_tokens": 9, "temperature": 0.3, "top_p": 0.8, "seed": 4, "stop": "x",
                                           "n": 2, "logprobs": True, "top_logprobs": 1, "presence_penalty": 0.1,
                                           "frequency_penalty": 0.2, "response_format": {"type": "json_object"}}
    assert json.loads(row["messages"]) == [{"role": "system", "content": "Be terse."},
                                           {"role": "user", "content": "one\ntwo"}]
    assert row["model"] == "m1"


def test_a_request_naming_a_model_the_spec_lacks_is_refused_and_models_imply_the_route():
    named = r"f line 3: body.model 'gpt-x' names no model of the spec's `models` \(a, b\)"
    with pytest.raises(InputError, match=named):
        openai.read_request({"custom_id": "a", "body": {"model": "gpt-x", "messages": []}}, "f line 3", ["a", "b"])
    spec = PipelineSpec(input={"kind": "openai_batch", "paths": "b.jsonl"}, output={"path": "o"},
                        models={"a": {"name": "tiny-random"}, "b": {"name": "smollm2-135m"}})
    assert spec.route.column == "model"


def test_an_anthropic_request_maps_system_stop_sequences_and_top_k_and_refuses_the_rest():
    _, (row,) = anthropic.read_request({"custom_id": "c", "params": {
        "model": "claude", "max_tokens": 5, "system": [{"type": "text", "text": "Sys."}], "top_k": 3,
        "stop_sequences": ["\n\n"], "metadata": {"user_id": "u"},
        "messages": [{"role": "user", "content": "hi"}]}}, "f line 1", None)
    assert json.loads(row["messages"])[0] == {"role": "system", "content": "Sys."}
    assert json.loads(row["sampling"]) == {"max_tokens": 5, "top_k": 3, "stop": ["\n\n"]}
    for params, named in [({"max_tokens": 5, "messages": [], "tools": []},
                           "field params.tools must be a non-empty list"),
                          ({"messages": []}, "params.max_tokens is required"),
                          ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
                           r"params.messages\[0\].role 'system' cannot be honoured"),
                          ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]},
                           r"content\[0\].type 'image' cannot be honoured")]:
        with pytest.raises(InputError, match=named):
            anthropic.read_request({"custom_id": "c", "params": params}, "f line 2", None)


ROW = {"output": "ab", "prompt_tokens": 4, "completion_tokens": 5, "finish_reason": "stop", "error": None,
       "error_class": None, "model": "smollm2-135m", "stop_sequence": None,
       "choices": [{"text": "ab", "finish_reason": "stop", "completion_tokens": 2, "stop_sequence": None},
                   {"text": "abc", "finish_reason": "length", "completion_tokens": 3, "stop_sequence": None}],
       "logprobs": [[{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}]}],
                    [{"token": "é", "logprob": -0.2, "top_logprobs": []}]]}


def test_result_lines_in_each_providers_shape():
    line, failed = openai_chat.output_line("r1", [(ROW, {})], 0)
    choices = line["response"]["body"]["choices"]
    assert not failed and [c["finish_reason"] for c in choices] == ["stop", "length"]
    assert choices[1]["logprobs"]["content"][0]["bytes"] == list("é".encode())
    assert line["response"]["body"]["usage"]["completion_tokens"] == 5
    message = anthropic.result_line("r1", {**ROW, "stop_sequence": "\n"}, 0)[0]["result"]["message"]
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "\n")
    assert anthropic.result_line("r1", {**ROW, "finish_reason": "length"}, 0)[0]["result"]["message"][
        "stop_reason"] == "max_tokens"
    errored, failed = anthropic.result_line("r2", {**ROW, "error": "no text", "error_class": "bad_input"}, 0)
    assert failed and errored["result"] == {"type": "errored", "error": {"type": "error", "error": {
        "type": "invalid_request_error", "message": "bad_input: no text"}}}
    from anthropic.types.messages import MessageBatchIndividualResponse  # the SDK's own type reads it

    assert MessageBatchIndividualResponse.model_validate(errored).result.error.error.type == "invalid_request_error"
