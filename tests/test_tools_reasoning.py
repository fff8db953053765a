"""Tools and reasoning without an engine: how a request's tools are read, checked, keyed and
written out, and vLLM's own parsers hooked up on SmolLM2's real tokenizer (issue 33). The engine
runs are in tests/test_tools_reasoning_engine.py."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from openai.types.chat import ChatCompletion

from operators.output_parsing import OutputParsing, parsed_completion
from operators.tokens import PromptForm, prompt_token_ids
from pipelines.formats import openai_chat
from pipelines.spec import validate_spec
from pipelines.unit.requests import UnitRequests
from spotbatch.errors import BatchFileError, SpecError

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
           "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The forecast.",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
TEMPLATE = (Path(__file__).parent / "fixtures" / "tools_chat_template.jinja").read_text()


def spec_with(sampling: dict, model: dict | None = None):
    return validate_spec({"input": {"paths": "in/", "prompt_column": "text"}, "output": {"path": "out/"},
                          "model": {"name": "smollm2-135m", **(model or {})}, "sampling": sampling})


def test_spec_tools_with_auto_need_a_tool_parser_and_are_refused_by_name_without_one():
    with pytest.raises(SpecError, match=r"sampling.tools with model: tool_choice auto \(OpenAI's default when "
                                        r"tools are given\) needs model.tool_parser"):
        spec_with({"tools": TOOLS})  # no tool_choice: auto, as at OpenAI
    with pytest.raises(SpecError, match="needs model.tool_parser"):
        spec_with({"tools": TOOLS, "tool_choice": "auto"})
    assert spec_with({"tools": TOOLS}, {"tool_parser": "hermes"}).model.tool_parser == "hermes"
    for forced in ("required", "none", NAMED):  # forced by structured output, or not parsed: no parser needed
        assert spec_with({"tools": TOOLS, "tool_choice": forced}).sampling.tool_choice == forced


@pytest.mark.parametrize("sampling, named", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice names function 'nope', which tools does not define"),
    ({"tools": [{"type": "web_search"}], "tool_choice": "required"}, r"tools\[0\] must be \{type: function"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice must be none, auto, required"),
    ({"tool_choice": "required"}, "tool_choice needs tools"),
    ({"tools": TOOLS, "tool_choice": "required", "n": 2}, "tools take n: 1"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
     "tools and response_format"),
])
def test_a_tools_field_that_cannot_be_honoured_is_refused_by_name(sampling, named):
    with pytest.raises(SpecError, match=named):
        spec_with(sampling)


def test_a_reasoning_parser_takes_one_choice():
    with pytest.raises(SpecError, match="model.reasoning_parser takes sampling.n: 1"):
        spec_with({"n": 2, "temperature": 0.5}, {"reasoning_parser": "qwen3"})


HISTORY = [{"role": "user", "content": "Weather in Paris for 2 days?"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2}"}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"}]


def test_an_openai_line_carries_tools_choice_and_a_tool_history_into_its_row():
    (row,) = openai_chat.read_line("r1", {"model": "m", "messages": HISTORY, "tools": TOOLS,
                                          "tool_choice": NAMED, "parallel_tool_calls": False,
                                          "chat_template_kwargs": {"enable_thinking": False}}, "f line 1", None)
    assert json.loads(row["sampling"]) == {"tools": TOOLS, "tool_choice": NAMED, "parallel_tool_calls": False,
                                           "chat_template_kwargs": {"enable_thinking": False}}
    assert json.loads(row["messages"]) == HISTORY  # kept as written: the arguments stay JSON text


@pytest.mark.parametrize("body, named", [
    ({"functions": [{"name": "f"}]}, "field body.functions cannot be honoured: deprecated by OpenAI"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "f line 1: field body.tool_choice names function 'x'"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                         "function": {"name": "f", "arguments": {"a": 1}}}]}]},
     r"body.messages\[0\].tool_calls\[0\].function.arguments must be a string"),
])
def test_an_openai_line_with_tools_it_cannot_honour_is_refused_by_name(body, named):
    with pytest.raises(BatchFileError, match=named):
        openai_chat.read_line("r1", {"messages": [{"role": "user", "content": "hi"}], **body}, "f line 1", None)


def test_the_dedup_and_cache_key_holds_the_tools_and_the_choice():
    spec = spec_with({})
    keys = UnitRequests(spec, None).keys(["hi"] * 5, [None] * 5, [
        None, {**spec.sampling.model_dump(), "tools": TOOLS, "tool_choice": "required"},
        {**spec.sampling.model_dump(), "tools": TOOLS, "tool_choice": NAMED},
        {**spec.sampling.model_dump(), "tools": TOOLS[:1], "tool_choice": NAMED},
        {**spec.sampling.model_dump(), "tools": TOOLS, "tool_choice": "required"}])
    assert len(set(keys[:4])) == 4 and keys[4] == keys[1]


def test_a_row_with_tool_calls_and_reasoning_writes_an_openai_chat_completion():
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather",
                                                               "arguments": "{\"city\": \"Oslo\", \"days\": 1}"}}]
    row = {"model": "m", "output": "", "finish_reason": "tool_calls", "prompt_tokens": 10, "completion_tokens": 7,
           "tool_calls": json.dumps(calls), "reasoning": "They want Oslo.", "reasoning_tokens": 4, "error": None}
    line, failed = openai_chat.output_line("r1", [(row, {})], 0)
    completion = ChatCompletion.model_validate(line["response"]["body"])
    choice = completion.choices[0]
    assert not failed and choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert (call.id, call.type, call.function.name) == ("call_a", "function", "get_weather")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    assert choice.message.model_extra["reasoning_content"] == "They want Oslo."
    assert completion.usage.completion_tokens_details.reasoning_tokens == 4


def test_a_tool_history_renders_through_the_chat_template_with_the_tools(smollm2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    ids = prompt_token_ids(tokenizer, json.dumps(HISTORY), PromptForm(None, "messages"), TEMPLATE,
                           {"tools": TOOLS, "enable_thinking": False})
    text = tokenizer.decode(ids)
    # The call's arguments reached the template as an object (OpenAI writes them as JSON text).
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}</tool_call>' in text
    assert "<tool_response>Sunny, 24 C</tool_response>" in text and '"name": "get_time"' in text
    assert text.endswith("<|im_start|>assistant\n")  # enable_thinking: false opens no thinking


@pytest.fixture(scope="module")
def vllm_tokenizer(smollm2):
    from vllm.tokenizers import get_tokenizer

    return get_tokenizer(str(smollm2))


class Out:
    """A finished vLLM RequestOutput's fields that parsing reads (the engine test runs the real one)."""

    def __init__(self, text: str, tokenizer):
        self.outputs = [type("C", (), {"index": 0, "text": text,
                                       "token_ids": tokenizer.encode(text, add_special_tokens=False)})()]


def parsed(parsing: OutputParsing, text: str, sampling: dict, tokenizer):
    from operators.engine import Completion

    completion = Completion(text=text, prompt_tokens=3, completion_tokens=9, finish_reason="stop")
    return parsed_completion(completion, Out(text, tokenizer), parsing, sampling)


def test_vllms_parsers_split_forced_and_auto_calls_on_smollm2s_tokenizer(vllm_tokenizer):
    forced = OutputParsing(vllm_tokenizer, None, None)
    schema = forced.forced_schema({"tools": TOOLS, "tool_choice": NAMED})
    assert schema == WEATHER  # the named function's parameters: what structured output holds the answer to
    named = parsed(forced, '{"city": "Rome", "days": 3}', {"tools": TOOLS, "tool_choice": NAMED}, vllm_tokenizer)
    assert named.finish_reason == "stop"  # a named function's call ends as "stop", as at OpenAI
    assert [c["function"] for c in named.tool_calls] == [{"name": "get_weather",
                                                          "arguments": '{"city": "Rome", "days": 3}'}]
    required = parsed(forced, '[{"name": "get_time", "parameters": {}}]', {"tools": TOOLS, "tool_choice": "required"},
                      vllm_tokenizer)
    assert required.finish_reason == "tool_calls" and required.tool_calls[0]["function"]["name"] == "get_time"
    assert required.text == "" and required.tool_calls[0]["id"].startswith("call_")
    with pytest.raises(ValueError, match="tool_choice auto needs model.tool_parser"):
        forced.engine_sampling({"tools": TOOLS})
    auto = OutputParsing(vllm_tokenizer, "hermes", None)
    text = 'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 1}}</tool_call>'
    found = parsed(auto, text, {"tools": TOOLS, "tool_choice": "auto"}, vllm_tokenizer)
    assert found.text.strip() == "Let me check." and found.finish_reason == "tool_calls"
    jsonschema.validate(json.loads(found.tool_calls[0]["function"]["arguments"]), WEATHER)
    plain = parsed(auto, text, {"tools": TOOLS, "tool_choice": "none"}, vllm_tokenizer)
    assert plain.tool_calls is None and plain.text == text  # none: tools shown, no call parsed


def test_vllms_reasoning_parser_keeps_the_thinking_apart_and_counts_it(vllm_tokenizer):
    parsing = OutputParsing(vllm_tokenizer, None, "qwen3")
    done = parsed(parsing, "the sum of two and two</think>It is 4.", {}, vllm_tokenizer)
    assert (done.reasoning, done.text) == ("the sum of two and two", "It is 4.")
    assert done.reasoning_tokens == len(vllm_tokenizer.encode("the sum of two and two", add_special_tokens=False))
    # A row's own enable_thinking: false (its template opened no thinking) is an answer alone.
    answer = parsed(parsing, "It is 4.", {"chat_template_kwargs": {"enable_thinking": False}}, vllm_tokenizer)
    assert (answer.reasoning, answer.text, answer.reasoning_tokens) == (None, "It is 4.", 0)
    with pytest.raises(ValueError, match="model.tool_parser 'llama3_json' cannot be used with this model"):
        OutputParsing(vllm_tokenizer, "llama3_json", None)  # its <|python_tag|> token is not SmolLM2's


def test_an_anthropic_request_reads_its_tools_choice_and_tool_history_as_openais():
    from pipelines.formats import anthropic

    history = [{"role": "user", "content": "Weather in Paris for 2 days?"},
               {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {
                   "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": 2}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                             "content": [{"type": "text", "text": "Sunny"}]}]}]
    tools = [{"name": "get_weather", "description": "The forecast.", "input_schema": WEATHER}]
    _, (row,) = anthropic.read_request({"custom_id": "a", "params": {
        "model": "claude", "max_tokens": 50, "messages": history, "tools": tools,
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}}}, "f line 1", None)
    assert json.loads(row["sampling"]) == {"max_tokens": 50, "tools": TOOLS[:1], "tool_choice": NAMED,
                                           "parallel_tool_calls": False}
    messages = json.loads(row["messages"])
    assert messages[1] == {"role": "assistant", "content": "Checking.", "tool_calls": [{
        "id": "toolu_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Paris", "days": 2}'}}]}
    assert messages[2] == {"role": "tool", "content": "Sunny", "tool_call_id": "toolu_1"}
    _, (row,) = anthropic.read_request({"custom_id": "b", "params": {
        "max_tokens": 5, "messages": history[:1], "tools": tools, "tool_choice": {"type": "any"}}}, "f line 2", None)
    assert json.loads(row["sampling"])["tool_choice"] == "required"
    with pytest.raises(BatchFileError, match=r"f line 3: field params.tools\[0\] cannot be honoured: only client"):
        anthropic.read_request({"custom_id": "c", "params": {"max_tokens": 5, "messages": history[:1], "tools": [
            {"type": "web_search_20250305", "name": "web_search"}]}}, "f line 3", None)


def test_an_anthropic_result_with_calls_and_thinking_parses_as_the_sdks_message():
    from anthropic.types import Message

    from pipelines.formats import anthropic

    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather",
                                                               "arguments": "{\"city\": \"Oslo\", \"days\": 1}"}}]
    row = {"model": "m", "output": "", "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 7,
           "tool_calls": json.dumps(calls), "reasoning": "Oslo, then.", "error": None}
    line, failed = anthropic.result_line("r1", row, 0)
    message = Message.model_validate(line["result"]["message"])
    assert not failed and message.stop_reason == "tool_use"
    thinking, use = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Oslo, then."
    assert (use.type, use.id, use.name) == ("tool_use", "call_a", "get_weather")
    jsonschema.validate(use.input, WEATHER)


def test_a_responses_line_reads_function_tools_and_writes_function_call_and_reasoning_items():
    from openai.types.responses import Response

    from pipelines.formats import openai_responses

    flat = [{"type": "function", **t["function"]} for t in TOOLS]
    (row,) = openai_responses.read_line("r1", {"input": "Weather in Oslo?", "tools": flat, "parallel_tool_calls": False,
                                               "tool_choice": {"type": "function", "name": "get_weather"}},
                                        "f line 1", None)
    sampling = json.loads(row["sampling"])
    assert (sampling["tools"], sampling["tool_choice"], sampling["parallel_tool_calls"]) == (TOOLS, NAMED, False)
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather",
                                                               "arguments": "{\"city\": \"Oslo\", \"days\": 1}"}}]
    result = {"model": "m", "output": "", "finish_reason": "stop", "prompt_tokens": 9, "completion_tokens": 6,
              "tool_calls": json.dumps(calls), "reasoning": "Oslo.", "reasoning_tokens": 2, "error": None}
    body = Response.model_validate(openai_responses.output_line("r1", [(result, row)], 5)[0]["response"]["body"])
    reasoning, call = body.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "Oslo."
    assert (call.type, call.call_id, call.name) == ("function_call", "call_a", "get_weather")
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    assert body.tool_choice.name == "get_weather" and [t.name for t in body.tools] == ["get_weather", "get_time"]
    assert body.usage.output_tokens_details.reasoning_tokens == 2
    with pytest.raises(BatchFileError, match=r"f line 2: field body.tool_choice names function 'nope'"):
        openai_responses.read_line("r2", {"input": "x", "tools": flat, "tool_choice": {"type": "function",
                                                                                      "name": "nope"}},
                                   "f line 2", None)


def test_a_parser_vllm_does_not_have_is_refused_by_name_before_any_engine():
    with pytest.raises(SpecError, match=r"model.tool_parser: 'hermess' is not one of vLLM's tool parsers \(.*hermes"):
        spec_with({}, {"tool_parser": "hermess"})
    with pytest.raises(SpecError, match=r"model.reasoning_parser: 'r1' is not one of vLLM's reasoning parsers"):
        spec_with({}, {"reasoning_parser": "r1"})


def test_every_row_of_tools_with_defs_is_forced_to_the_whole_schema(vllm_tokenizer):
    """Tools from Pydantic's model_json_schema() carry $defs; vLLM's schema helper pops them in
    place, so the second row of the same tools must still get them (not a $ref to nothing)."""
    place = {"$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}},
             "type": "object", "properties": {"where": {"$ref": "#/$defs/Place"}}, "required": ["where"]}
    tools = [{"type": "function", "function": {"name": "visit", "parameters": place}}]
    parsing = OutputParsing(vllm_tokenizer, None, None)
    sampling = {"tools": tools, "tool_choice": "required"}
    first, second = parsing.forced_schema(sampling), parsing.forced_schema(sampling)
    assert first == second and "$defs" in json.dumps(second)


def test_parallel_tool_calls_false_keeps_the_first_auto_call(vllm_tokenizer):
    auto = OutputParsing(vllm_tokenizer, "hermes", None)
    text = ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 1}}</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>')
    both = parsed(auto, text, {"tools": TOOLS, "tool_choice": "auto"}, vllm_tokenizer)
    one = parsed(auto, text, {"tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": False}, vllm_tokenizer)
    assert [c["function"]["name"] for c in both.tool_calls] == ["get_weather", "get_time"]
    assert [c["function"]["name"] for c in one.tool_calls] == ["get_weather"]


def test_an_anthropic_result_whose_forced_call_was_cut_off_exports_as_max_tokens():
    from anthropic.types import Message

    from pipelines.formats import anthropic

    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Os'}}]
    row = {"model": "m", "output": "", "finish_reason": "length", "prompt_tokens": 10, "completion_tokens": 7,
           "tool_calls": json.dumps(calls), "error": None}
    line, _ = anthropic.result_line("r1", row, 0)
    message = Message.model_validate(line["result"]["message"])
    assert message.stop_reason == "max_tokens" and message.content[-1].input == {}


def test_the_engine_is_given_the_reasoning_parser_for_its_structured_output(smollm2):
    """vLLM's structured output constrains from the first token unless its config names the
    reasoning parser (its server's --reasoning-parser sets it): a forced call would be the thinking."""
    from vllm.engine.arg_utils import EngineArgs

    from operators.engine import EngineConfig

    kwargs = EngineConfig(str(smollm2), max_model_len=512, reasoning_parser="qwen3").llm_kwargs()
    config = EngineArgs(**kwargs).create_engine_config()
    assert config.structured_outputs_config.reasoning_parser == "qwen3"
    plain = EngineArgs(**EngineConfig(str(smollm2), max_model_len=512).llm_kwargs()).create_engine_config()
    assert plain.structured_outputs_config.reasoning_parser == ""


def _tool_parser_names() -> list[str]:
    from vllm.tool_parsers import ToolParserManager

    return sorted({*ToolParserManager.tool_parsers, *ToolParserManager.lazy_parsers})


@pytest.mark.parametrize("name", _tool_parser_names())
def test_an_auto_rows_engine_settings_are_what_its_tool_parsers_adjust_request_sets(name, vllm_tokenizer):
    """vLLM's server lets a tool parser adjust a request before it runs (hermes, kimi_k2, ...: the
    call's markers are special tokens, which the default detokenizing drops): an auto row's
    SamplingParams here are what vLLM's server would run it with."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.parser import ParserManager

    from operators.engine_params import sampling_params
    from pipelines.spec.sampling import SamplingSpec

    try:
        parsing = OutputParsing(vllm_tokenizer, name, None)
    except ValueError as err:  # refused when the engine starts, with this reason
        pytest.skip(f"{name} cannot parse SmolLM2's output: {err}")
    row = {**SamplingSpec().model_dump(), "tools": TOOLS, "tool_choice": "auto"}
    ran = sampling_params(parsing.engine_sampling(row))
    request = ChatCompletionRequest.model_validate({"model": "", "messages": [{"role": "user", "content": "hi"}],
                                                    "tools": TOOLS, "tool_choice": "auto"})
    server = ParserManager.get_parser(tool_parser_name=name, reasoning_parser_name=None, enable_auto_tools=True,
                                      tokenizer=vllm_tokenizer)
    adjusted = server(vllm_tokenizer, request.tools, chat_template_kwargs={}).adjust_request(request)
    assert (ran.skip_special_tokens, ran.spaces_between_special_tokens) == (
        adjusted.skip_special_tokens, adjusted.spaces_between_special_tokens)
    # Some parsers hold an auto call's envelope to a structural tag (glm45: by default; hermes, kimi_k2,
    # ...: for a strict tool), which vLLM's server sends to the engine.
    tag = [getattr(s.structured_outputs, "structural_tag", None) for s in (ran, adjusted)]
    assert tag[0] == tag[1]


THINKING_TRACE = [
    {"role": "user", "content": "Weather in Paris for 2 days?"},
    {"role": "assistant", "content": [{"type": "thinking", "thinking": "They want Paris", "signature": "EqQB"},
                                      {"type": "redacted_thinking", "data": "EmwKAhgB"},
                                      {"type": "thinking", "thinking": ", for 2 days.", "signature": "EqQC"},
                                      {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                       "input": {"city": "Paris", "days": 2}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}]}]
SHOWS_REASONING = ("{% for m in messages %}{{ m.role }}:{% if m.reasoning_content %}<think>{{ m.reasoning_content }}"
                   "</think>{% endif %}{{ m.content or '' }}|{% endfor %}")


def anthropic_messages(history: list[dict]) -> str:
    from pipelines.formats import anthropic

    _, (row,) = anthropic.read_request({"custom_id": "a", "params": {"max_tokens": 50, "messages": history}},
                                       "f line 1", None)
    return row["messages"]


def test_an_anthropic_turns_thinking_blocks_reach_the_template_as_its_earlier_reasoning(smollm2):
    """Anthropic asks a tool-use trace made with thinking to send its thinking blocks back: they are
    the turn's reasoning, joined, as vLLM's Anthropic server reads them; redacted_thinking (encrypted
    for Anthropic's models) is dropped as vLLM drops it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    messages = anthropic_messages(THINKING_TRACE)
    assert json.loads(messages)[1]["reasoning"] == "They want Paris, for 2 days."
    text = tokenizer.decode(prompt_token_ids(tokenizer, messages, PromptForm(None, "messages"), SHOWS_REASONING))
    assert text == ("user:Weather in Paris for 2 days?|assistant:<think>They want Paris, for 2 days.</think>|"
                    "tool:Sunny|")
    # a turn of thinking alone renders with the model's own template, its content "" as at vLLM
    alone = anthropic_messages([THINKING_TRACE[0], {"role": "assistant", "content": THINKING_TRACE[1]["content"][:1]},
                                {"role": "user", "content": "And Oslo?"}])
    text = tokenizer.decode(prompt_token_ids(tokenizer, alone, PromptForm(None, "messages")))
    assert "<|im_start|>assistant\n<|im_end|>\n<|im_start|>user\nAnd Oslo?<|im_end|>" in text


@pytest.mark.parametrize("turn, named", [
    ({"role": "assistant", "content": [{"type": "thinking", "thinking": "Hm.", "signature": "s", "budget": 5}]},
     r"field params.messages\[1\].content\[0\].budget is not a thinking field"),
    ({"role": "assistant", "content": [{"type": "thinking", "thinking": 7, "signature": "s"}]},
     r"params.messages\[1\].content\[0\].thinking must be a string"),
    ({"role": "user", "content": [{"type": "thinking", "thinking": "Hm.", "signature": "s"}]},
     r"params.messages\[1\].content\[0\].type 'thinking' cannot be honoured"),
    ({"role": "assistant", "content": [THINKING_TRACE[1]["content"][3], 5]},  # not a block: it used to crash
     r"params.messages\[1\].content\[\d\] must be an object \(a content part\), got a number"),
])
def test_a_thinking_block_that_cannot_be_honoured_is_refused_by_name(turn, named):
    with pytest.raises(BatchFileError, match=f"f line 1: {named}"):
        anthropic_messages([THINKING_TRACE[0], turn])
