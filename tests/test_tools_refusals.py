"""Tools and reasoning fields a batch line or a spec gives that spotbatch cannot honour, refused by
name (file, line, field) before any engine starts, and the ones it honours in a way a user would
not guess (an Anthropic tool_result's is_error), Ray-free (issue 33's review)."""

from __future__ import annotations

import json

import pytest

from operators.tokens import PromptForm, prompt_token_ids
from pipelines.formats import anthropic
from pipelines.formats.batch_files import resolve_input
from pipelines.spec import PipelineSpec
from spotbatch.errors import BatchFileError
from tests.test_tools_reasoning import TEMPLATE, WEATHER

ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "The forecast.", "input_schema": WEATHER}]


def call_and_result(**result) -> list[dict]:
    return [{"role": "user", "content": "Weather in Paris for 2 days?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"city": "Paris", "days": 2}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", **result}]}]


def batch_spec(tmp_path, kind: str, lines: list[dict], **model) -> PipelineSpec:
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return PipelineSpec(input={"kind": kind, "paths": str(batch)}, model={"name": "tiny-random", **model},
                        output={"path": str(tmp_path / "out")})


def refused_before_anything_is_written(tmp_path, spec: PipelineSpec, named: str) -> None:
    """Refused where a run reads its batch files, before it plans or starts any engine."""
    with pytest.raises(BatchFileError, match=named):
        resolve_input(spec)
    assert not list(tmp_path.rglob("*.parquet"))  # nothing was converted


def test_a_failed_tool_result_reads_as_an_error_to_the_model(smollm2):
    from transformers import AutoTokenizer

    _, (row,) = anthropic.read_request({"custom_id": "a", "params": {
        "max_tokens": 5, "messages": call_and_result(content="city not found", is_error=True),
        "tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "none"}}}, "f line 1", None)
    messages = json.loads(row["messages"])
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: city not found"}
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    ids = prompt_token_ids(tokenizer, row["messages"], PromptForm(None, "messages"), TEMPLATE,
                           {"tools": json.loads(row["sampling"])["tools"]})
    assert "<tool_response>Error: city not found</tool_response>" in tokenizer.decode(ids)
    _, (ok,) = anthropic.read_request({"custom_id": "b", "params": {
        "max_tokens": 5, "messages": call_and_result(content="Sunny", is_error=False)}}, "f line 2", None)
    assert json.loads(ok["messages"])[2]["content"] == "Sunny"


@pytest.mark.parametrize("block, named", [
    ({"content": "Sunny", "citations": []}, r"messages\[2\].content\[0\].citations is not a tool_result field"),
    ({"content": "Sunny", "is_error": "yes"}, r"messages\[2\].content\[0\].is_error must be true or false"),
])
def test_a_tool_result_field_spotbatch_does_not_read_is_refused_by_name(tmp_path, block, named):
    line = {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": call_and_result(**block)}}
    refused_before_anything_is_written(tmp_path, batch_spec(tmp_path, "anthropic_batch", [line]),
                                       r"batch.jsonl line 1: field params\." + named)


def test_a_tool_use_field_spotbatch_does_not_read_is_refused_by_name(tmp_path):
    history = call_and_result(content="Sunny")
    history[1]["content"][0]["caller"] = {"type": "direct"}
    line = {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": history}}
    refused_before_anything_is_written(tmp_path, batch_spec(tmp_path, "anthropic_batch", [line]),
                                       r"batch.jsonl line 1: field params\.messages\[1\]\.content\[0\]\.caller "
                                       r"is not a tool_use field")
