"""A Responses line replaying an agent trace (issue 33): its function_call, function_call_output
and reasoning items read as the chat line's tool calls and tool messages, to the same prompt
tokens; what cannot be honoured is refused by name. No engine."""

from __future__ import annotations

import json

import pytest

from operators.tokens import PromptForm, prompt_token_ids
from pipelines.formats import openai
from pipelines.planning.inputs import InputError
from pipelines.run import run
from pipelines.spec import PipelineSpec
from tests.test_tools_reasoning import HISTORY, TEMPLATE, TOOLS

ARGS = "{\"city\": \"Paris\", \"days\": 2}"
CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": ARGS,
        "status": "completed"}
THOUGHT = {"type": "reasoning", "id": "rs_1", "summary": [],
           "content": [{"type": "reasoning_text", "text": "They want Paris."}]}
TRACE = [{"role": "user", "content": "Weather in Paris for 2 days?"}, THOUGHT, CALL,
         {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 24 C"}]
FLAT_TOOLS = [{"type": "function", **tool["function"]} for tool in TOOLS]


def line(url: str, **body) -> dict:
    return {"custom_id": "r1", "method": "POST", "url": url, "body": body}


def messages_of(request: dict) -> list[dict]:
    (row,) = openai.read_request(request, "f line 1", None)[1]
    return json.loads(row["messages"])


def test_a_responses_trace_reads_to_the_chat_lines_messages():
    chat = messages_of(line("/v1/chat/completions", messages=HISTORY, tools=TOOLS))
    responses = messages_of(line("/v1/responses", input=TRACE, tools=FLAT_TOOLS))
    # the reasoning item is the calling message's earlier thinking, as vLLM's Responses server reads it
    assert responses[1].pop("reasoning") == "They want Paris." and responses == chat
    assert responses[1]["tool_calls"][0] == {"id": "call_1", "type": "function",
                                             "function": {"name": "get_weather", "arguments": ARGS}}


def test_consecutive_calls_join_the_assistant_message_and_outputs_may_be_text_parts():
    second = {**CALL, "id": "fc_2", "call_id": "call_2", "name": "get_time", "arguments": "{}"}
    trace = [TRACE[0], {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]}, CALL, second,
             {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "9:00"}]},
             TRACE[3]]
    messages = messages_of(line("/v1/responses", input=trace, instructions="Be brief."))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    assert messages[2]["content"] == "Checking."
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["call_1", "call_2"]
    assert messages[3] == {"role": "tool", "content": "9:00", "tool_call_id": "call_2"}


def test_a_responses_trace_renders_the_chat_lines_prompt_tokens(smollm2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))

    def tokens(request: dict) -> list[int]:
        (row,) = openai.read_request(request, "f line 1", None)[1]
        return prompt_token_ids(tokenizer, row["messages"], PromptForm(None, "messages"), TEMPLATE,
                                {"tools": TOOLS, "enable_thinking": False})
    chat = tokens(line("/v1/chat/completions", messages=HISTORY, tools=TOOLS))
    assert tokens(line("/v1/responses", input=TRACE, tools=FLAT_TOOLS)) == chat
    assert "<tool_response>Sunny, 24 C</tool_response>" in tokenizer.decode(chat)


SHOWS_THINKING = ("{% for m in messages %}{{ m.role }}:{% if m.reasoning_content %}<think>{{ m.reasoning_content }}"
                  "</think>{% endif %}{{ m.content or '' }}|{% endfor %}")


def test_a_reasoning_item_reaches_the_template_as_the_answers_earlier_thinking_as_at_vllm(smollm2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    summary = {**THOUGHT, "content": None, "summary": [{"type": "summary_text", "text": "Short."}]}
    trace = [TRACE[0], THOUGHT, {"role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
             {"role": "user", "content": "And Oslo?"}, summary, CALL]
    (row,) = openai.read_request(line("/v1/responses", input=trace), "f line 1", None)[1]
    text = tokenizer.decode(prompt_token_ids(tokenizer, row["messages"], PromptForm(None, "messages"),
                                             SHOWS_THINKING, {}))
    assert text == ("user:Weather in Paris for 2 days?|assistant:<think>They want Paris.</think>Sunny.|"
                    "user:And Oslo?|assistant:<think>Short.</think>|")


@pytest.mark.parametrize("items, named", [
    ([TRACE[0], {"type": "function_call_output", "call_id": "call_9", "output": "x"}],
     r"body.input\[1\].call_id 'call_9': no earlier function_call item made this call"),
    ([TRACE[0], {**CALL, "namespace": "n"}], r"body.input\[1\].namespace is not a function_call item field"),
    ([TRACE[0], {**CALL, "arguments": {"city": "Paris"}}], r"body.input\[1\].arguments must be a string"),
    ([TRACE[0], CALL, {**TRACE[3], "output": [{"type": "input_image", "image_url": "u"}]}],
     r"body.input\[2\].output\[0\].type 'input_image' cannot be honoured"),
    ([TRACE[0], {**THOUGHT, "encrypted_content": "gAAA"}],
     r"body.input\[1\].encrypted_content cannot be honoured: it is OpenAI's"),
    ([TRACE[0], {**THOUGHT, "summary": [{"type": "output_text", "text": "x"}]}],
     r"body.input\[1\].summary\[0\].type 'output_text' cannot be honoured"),
    ([TRACE[0], {"type": "web_search_call", "id": "ws_1", "status": "completed"}],
     r"body.input\[1\].type 'web_search_call' cannot be honoured: input items here are message, function_call"),
])
def test_a_history_item_that_cannot_be_honoured_is_refused_by_name(items, named):
    with pytest.raises(InputError, match=f"f line 1: {named}"):
        messages_of(line("/v1/responses", input=items))


def test_a_bad_history_item_in_a_file_names_its_file_and_line_before_anything_runs(tmp_path):
    batch = tmp_path / "batch.jsonl"
    good, bad = line("/v1/responses", input=TRACE), line("/v1/responses", input=[{**CALL, "call_id": 7}])
    batch.write_text(json.dumps(good) + "\n" + json.dumps({**bad, "custom_id": "r2"}) + "\n")
    spec = PipelineSpec(input={"kind": "openai_batch", "paths": str(batch)}, model={"name": "tiny-random"},
                        output={"path": str(tmp_path / "out")})
    with pytest.raises(InputError, match=r"batch.jsonl line 2: body.input\[0\].call_id must be a string"):
        run(spec)
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_reasoning_item_no_answer_follows_renders_with_the_models_own_template(smollm2):
    """[user, reasoning, user]: the reasoning item starts an assistant message no answer joins; its
    content reaches the template as "" (as vLLM gives it), not None, which SmolLM2's template cannot
    join to text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    trace = [TRACE[0], THOUGHT, {"role": "user", "content": "And Oslo?"}]
    (row,) = openai.read_request(line("/v1/responses", input=trace), "f line 1", None)[1]
    text = tokenizer.decode(prompt_token_ids(tokenizer, row["messages"], PromptForm(None, "messages")))
    assert "<|im_start|>assistant\n<|im_end|>\n<|im_start|>user\nAnd Oslo?<|im_end|>" in text
