"""OpenAI `/v1/responses` batch lines: the request read as a chat (its messages, in the model's
chat template), the answer written out as a `response` object.

In, a body: {"model", "input": "text" or [items: messages {role, content: text or input_text
parts}, and an agent trace's function_call, function_call_output and reasoning items, read as
OpenAI chat's tool calls and tool messages (pipelines/formats/responses_input.py)],
"instructions" (a system message first), "max_output_tokens", "temperature", "top_p", "text":
{"format": {"type": "json_schema", "name", "schema", "strict"} or {"type": "json_object"}} (the
chat path's response_format), "metadata", "tools" (function tools), "tool_choice",
"parallel_tool_calls" (pipelines/formats/responses_tools.py)}. What cannot be honoured here is
refused by name before any engine starts: built-in tools, previous_response_id, background,
store: true, reasoning, a reasoning item's encrypted_content, and any unknown field. vLLM's own Responses server reads
these fields the same way (vllm/entrypoints/openai/responses/protocol.py: `instructions` a system
message, `text.format` its structured outputs, `max_output_tokens` its max_tokens).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from pipelines.formats.lines import KnownFields, check_fields, kind_of, requested_model, shown, string_field
from pipelines.formats.messages import chat_messages_of
from pipelines.formats.openai_envelope import MESSAGES_SCHEMA, failed, succeeded
from pipelines.formats.responses_input import input_messages
from pipelines.formats.responses_tools import echoed, output_items, tool_sampling
from spotbatch.errors import BatchFileError

ENDPOINT = "/v1/responses"
SCHEMA = MESSAGES_SCHEMA.append(pa.field("metadata", pa.string()))  # metadata: JSON, returned in the response
PROMPT_COLUMN, FORMAT = "messages", "messages"
LIST_INPUTS = False
METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # OpenAI's limits
INERT_FIELDS = {"metadata", "user", "service_tier", "safety_identifier", "prompt_cache_key", "store", "truncation"}
REFUSED = {
    "max_tool_calls": "a limit on tool calls over a conversation's turns means nothing for one answer",
    "previous_response_id": "responses are not stored here, so none can be continued; send the whole input",
    "conversation": "conversations are not stored here; send the whole input",
    "background": "a batch runs in the background already", "stream": "a batch is not streamed",
    "reasoning": "reasoning effort is not a setting here (model.reasoning_parser keeps a model's thinking apart)",
    "include": "no extra output items are returned here",
    "prompt": "prompt templates are OpenAI's, stored there",
    "top_logprobs": "logprobs are not returned in responses here",
}
BODY_FIELDS = INERT_FIELDS | {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "text",
                              "tools", "tool_choice", "parallel_tool_calls"}
DEFAULT_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "seed": None, "max_tokens": None, "n": 1}


def read_line(custom_id: str, body: dict[str, Any], where: str, models: list[str] | None) -> list[dict[str, Any]]:
    """The request's one row: custom_id, messages (JSON), sampling (JSON), model, metadata (JSON)."""
    check_fields(body, where, "body", KnownFields(BODY_FIELDS, REFUSED, "an OpenAI Responses field"))
    if body.get("store") not in (None, False):
        raise BatchFileError(f"{where}: field body.store cannot be honoured: responses are not stored here; "
                             f"refused rather than dropped. Set it to false or remove it")
    if body.get("truncation") not in (None, "disabled"):
        raise BatchFileError(f"{where}: field body.truncation {shown(body['truncation'])} cannot be honoured: an "
                             f"input is never cut here (a long one fails alone); use \"disabled\"")
    sampling = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}  # null: left out
    if body.get("max_output_tokens") is not None:
        sampling["max_tokens"] = body["max_output_tokens"]
    response_format = _format(body.get("text"), where)
    if response_format is not None:
        sampling["response_format"] = response_format
    sampling.update(tool_sampling(body, where))  # function tools, as the chat's (responses_tools.py)
    instructions = body.get("instructions")
    if instructions is not None:
        string_field(instructions, where, "body.instructions")
    metadata = _metadata(body.get("metadata"), where)
    return [{"custom_id": custom_id,
             "model": requested_model(body.get("model"), where, "body.model", models),
             "messages": chat_messages_of(input_messages(body.get("input"), where), where, "body.input",
                                          system=instructions),
             "sampling": json.dumps(sampling), "metadata": None if metadata is None else json.dumps(metadata)}]


def _metadata(value: Any, where: str) -> dict[str, str] | None:
    """OpenAI's metadata: up to 16 string keys (64 characters) with string values (512), given
    back in the response; anything else OpenAI refuses, and so is it here."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BatchFileError(f"{where}: body.metadata must be an object of strings, got {kind_of(value)}")
    if len(value) > METADATA_KEYS:
        raise BatchFileError(f"{where}: body.metadata has {len(value)} keys; at most {METADATA_KEYS}")
    for key, text in value.items():
        if len(key) > METADATA_KEY_CHARS:
            raise BatchFileError(f"{where}: body.metadata key {shown(key)} is longer than {METADATA_KEY_CHARS} "
                                 f"characters")
        if not isinstance(text, str) or len(text) > METADATA_VALUE_CHARS:
            raise BatchFileError(f"{where}: body.metadata.{key} must be a string of at most "
                                 f"{METADATA_VALUE_CHARS} characters, got {kind_of(text)}")
    return value


def _format(text: Any, where: str) -> dict[str, Any] | None:
    """`text.format` as the chat path's response_format (the row's sampling checks the schema)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise BatchFileError(f"{where}: body.text must be an object, got {kind_of(text)}")
    unknown = sorted(set(text) - {"format"})
    if unknown:
        raise BatchFileError(f"{where}: field body.text.{unknown[0]} is not an OpenAI Responses field spotbatch "
                             f"knows; refused rather than dropped")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise BatchFileError(f"{where}: body.text.format must be an object, got {kind_of(fmt)}")
    kind = fmt.get("type")
    if kind == "json_schema":
        extra = sorted(set(fmt) - {"type", "name", "schema", "strict", "description"})
        if extra:
            raise BatchFileError(f"{where}: field body.text.format.{extra[0]} is not a json_schema format field; "
                                 f"refused rather than dropped")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in ("name", "schema", "strict", "description")
                                                       if k in fmt}}
    if kind in ("text", "json_object"):
        if set(fmt) != {"type"}:
            raise BatchFileError(f"{where}: body.text.format of type {kind} takes no other field")
        return None if kind == "text" else {"type": "json_object"}
    raise BatchFileError(f"{where}: body.text.format.type {shown(kind)} cannot be honoured: text, json_object or "
                         f"json_schema are")


def output_line(custom_id: str, rows: list[tuple[dict, dict]], created: int) -> tuple[dict, bool]:
    """The `response` object of one request from its (result row, input row)."""
    row, source = rows[0]
    if row.get("error") is not None:
        return failed(custom_id, row)
    status = "incomplete" if row["finish_reason"] == "length" else "completed"
    message = {"type": "message", "id": f"msg_{custom_id}", "role": "assistant", "status": status,
               "content": [{"type": "output_text", "text": row["output"], "annotations": []}]}
    items = output_items(custom_id, row)
    reasoning = [i for i in items if i["type"] == "reasoning"]
    calls = [i for i in items if i["type"] == "function_call"]
    output = reasoning + ([message] if row["output"] or not calls else []) + calls
    metadata = source.get("metadata")
    body = {
        "id": f"resp_{custom_id}", "object": "response", "created_at": created, "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None, "error": None,
        "model": row["model"], "output": output, "metadata": json.loads(metadata) if metadata else {},
        **echoed(source.get("sampling")),
        "usage": {"input_tokens": row["prompt_tokens"],
                  "input_tokens_details": {"cached_tokens": row.get("cached_prompt_tokens") or 0,
                                           "cache_write_tokens": 0},
                  "output_tokens": row["completion_tokens"],
                  "output_tokens_details": {"reasoning_tokens": row.get("reasoning_tokens") or 0},
                  "total_tokens": row["prompt_tokens"] + row["completion_tokens"]},
    }
    return succeeded(custom_id, body)
