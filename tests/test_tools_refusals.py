"""Tools and reasoning fields a batch line or a spec gives that spotbatch cannot honour, refused by
name (file, line, field) before any engine starts, and the ones it honours in a way a user would
not guess (an Anthropic tool_result's is_error), Ray-free (issue 33's review)."""

from __future__ import annotations

import inspect
import json

import pytest

from operators.tokens import PromptForm, prompt_token_ids
from pipelines.formats import anthropic
from pipelines.formats.batch_files import resolve_input
from pipelines.spec import PipelineSpec, validate_spec
from pipelines.spec.sampling import SamplingSpec
from pipelines.spec.template_kwargs import RESERVED
from spotbatch.errors import BatchFileError, SpecError
from tests.test_tools_reasoning import TEMPLATE, WEATHER
from tests.test_tools_reasoning import vllm_tokenizer as vllm_tokenizer  # a fixture

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


def parquet_spec(model: dict, sampling: dict) -> PipelineSpec:
    return validate_spec({"input": {"paths": "in/", "prompt_column": "text"}, "output": {"path": "out/"},
                          "model": {"name": "smollm2-135m", **model}, "sampling": sampling})


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


STRICT = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER, "strict": True}}]


def chat_line(custom_id: str = "a", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "Weather in Oslo?"}], **body}}


def test_a_strict_function_with_auto_is_refused_where_the_tool_parser_cannot_hold_it():
    with pytest.raises(SpecError, match=r"sampling.tools with model: tools\[0\].function.strict: true cannot be kept "
                                        r"with tool_choice auto: vLLM's pythonic tool parser has no structural tag"):
        parquet_spec({"tool_parser": "pythonic"}, {"tools": STRICT})
    for parser, choice in (("hermes", "auto"), ("pythonic", "required")):  # held by a structural tag; forced
        assert parquet_spec({"tool_parser": parser}, {"tools": STRICT, "tool_choice": choice}).sampling.tools == STRICT


def test_a_strict_function_in_a_line_is_refused_by_file_line_and_field(tmp_path):
    lines = [chat_line("a"), chat_line("b", tools=STRICT, tool_choice="auto")]
    spec = batch_spec(tmp_path, "openai_batch", lines, tool_parser="pythonic")
    refused_before_anything_is_written(tmp_path, spec, r"batch.jsonl line 2: tools cannot be honoured: "
                                                       r"tools\[0\].function.strict: true cannot be kept")


def test_a_strict_function_with_auto_is_held_to_its_schema_by_hermes_structural_tag(vllm_tokenizer):
    from operators.output_parsing import OutputParsing

    row = {**SamplingSpec().model_dump(), "tools": STRICT, "tool_choice": "auto"}
    tag = json.loads(OutputParsing(vllm_tokenizer, "hermes", None).engine_sampling(row)["structured"]["structural_tag"])
    assert WEATHER["properties"] == _found(tag, "properties")  # the arguments held to the function's schema


def _found(value, key):
    if isinstance(value, dict):
        return value.get(key) or next((f for v in value.values() if (f := _found(v, key))), None)
    if isinstance(value, list):
        return next((f for v in value if (f := _found(v, key))), None)
    return None


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_a_chat_template_kwarg_the_template_would_not_see_is_refused_in_a_spec(name):
    for where, model, sampling in (("sampling", {}, {"chat_template_kwargs": {name: True}}),
                                   ("model", {"chat_template_kwargs": {name: True}}, {})):
        with pytest.raises(SpecError, match=rf"{where}.chat_template_kwargs: {name} is not a template variable"):
            parquet_spec(model, sampling)


def test_the_refused_template_kwargs_are_every_argument_of_apply_chat_template():
    from transformers import PreTrainedTokenizerBase

    arguments = set(inspect.signature(PreTrainedTokenizerBase.apply_chat_template).parameters) - {"self", "kwargs"}
    assert arguments <= set(RESERVED)


def read_errors(spec: PipelineSpec) -> list[str | None]:
    """Each request's error, in the file's order, as the read stage makes it (its bad_input
    record), with no engine."""
    from pipelines.estimate.work import model_sources
    from pipelines.planning.inputs import list_shards
    from pipelines.planning.units import make_plan
    from pipelines.stream.unit_rows import ERROR, unit_rows

    spec = resolve_input(spec)  # not refused: the other requests run
    plan = make_plan(spec, list_shards(spec.input), model_sources(spec))
    return [e for unit in plan.units for e in unit_rows(unit.descriptor(), spec).column(ERROR).to_pylist()]


def test_a_line_with_a_chat_template_kwarg_the_template_would_not_see_is_its_rows_error(tmp_path):
    lines = [chat_line("a", chat_template_kwargs={"enable_thinking": False}),
             chat_line("b", chat_template_kwargs={"tokenize": True})]
    errors = read_errors(batch_spec(tmp_path, "openai_batch", lines))
    assert errors[0] is None and "chat_template_kwargs: tokenize is not a template variable" in errors[1], errors


def test_n_above_one_with_a_reasoning_parser_is_refused_by_line(tmp_path):
    spec = batch_spec(tmp_path, "openai_batch", [chat_line("a"), chat_line("b", n=2)], reasoning_parser="qwen3")
    refused_before_anything_is_written(tmp_path, spec, r"batch.jsonl line 2: n: 2 cannot be honoured: "
                                                       r"model.reasoning_parser takes n: 1")


@pytest.mark.parametrize("body, named", [
    ({"tools": STRICT, "tool_choice": "required", "n": 2}, "tools take n: 1"),
    ({"tools": STRICT, "tool_choice": "required", "response_format": {"type": "json_object"}},
     "tools and response_format"),
    ({"logprobs": False, "top_logprobs": 2}, "top_logprobs needs logprobs: true"),
])
def test_a_line_its_row_would_fail_at_the_engine_is_its_rows_error_and_the_rest_run(tmp_path, body, named):
    """As OpenAI answers a bad request in its error file while the others run."""
    errors = read_errors(batch_spec(tmp_path, "openai_batch", [chat_line("a"), chat_line("b", **body)]))
    assert errors[0] is None and named in errors[1], errors
