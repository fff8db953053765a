"""Anthropic Message Batches files: requests in, results out.

In, one request per line:
    {"custom_id": "r1", "params": {"model": "...", "max_tokens": 256, "messages": [...],
     "system": "...", "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["\\n\\n"],
     "metadata": {...}}}
Every field is honoured with Anthropic's meaning (a request without `temperature` samples at
1.0, as Anthropic does) or refused by name (images, documents); tools and tool_choice are read
into OpenAI's (pipelines/formats/anthropic_tools.py); thinking as vLLM's Anthropic server reads it
(enabled: a thinking_token_budget, which needs model.reasoning_parser; disabled: the chat
template's enable_thinking: false). Out, per row:
    {"custom_id": "r1", "result": {"type": "succeeded", "message": {"id", "type": "message",
     "role": "assistant", "model", "content": [thinking, text and tool_use blocks], "stop_reason",
     "stop_sequence", "usage": {"input_tokens", "output_tokens"}}}}
or {"custom_id": "r1", "result": {"type": "errored", "error": {"type": "error", "error": {"type",
"message"}}}} (Anthropic's error body, as the SDK's MessageBatchErroredResult reads it).
"""

from __future__ import annotations

import json
import sys
from types import ModuleType
from typing import Any

from pipelines.formats.anthropic_tools import content_blocks, openai_messages, tool_sampling
from pipelines.formats.lines import ERROR_TYPES, KnownFields, check_fields, check_line, kind_of, requested_model
from pipelines.formats.messages import chat_messages_of, role_of, text_of
from pipelines.formats.openai_envelope import MESSAGES_SCHEMA
from spotbatch.errors import BatchFileError

NAME = "Anthropic"
ENDPOINT = "/v1/messages"  # the one kind of request in a Message Batch
SCHEMA = MESSAGES_SCHEMA  # the Parquet a file of these requests is read into
PROMPT_COLUMN, FORMAT = "messages", "messages"  # the spec's input.prompt_column and input.format for it
LIST_INPUTS = False
REQUEST_FIELDS = {"custom_id", "params"}
SAMPLING_FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "stop_sequences": "stop",
                   "max_tokens": "max_tokens"}
INERT_FIELDS = {"metadata", "service_tier"}  # bookkeeping at Anthropic too
REFUSED = {
    "stream": "a batch is not streamed",
    "mcp_servers": "MCP servers are not called here", "container": "code execution is not run here",
}
MODEL_FIELD = "params.model"  # where a request names its model (pipelines/formats/batch_files.py)
THINKING_FIELD = "params.thinking"  # where it asks for a thinking budget (pipelines/formats/request_checks.py)
PARAMS_FIELDS = set(SAMPLING_FIELDS) | INERT_FIELDS | {"model", "messages", "system", "tools", "tool_choice",
                                                       "thinking"}
MIN_BUDGET = 1024  # Anthropic's least budget_tokens
ROLES = {"user", "assistant"}
DEFAULT_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "seed": None, "n": 1}


def read_request(request: Any, where: str, models: list[str] | None) -> tuple[ModuleType, list[dict[str, Any]]]:
    """One request line: this module (its one endpoint), and the line's row: custom_id, messages
    (JSON), sampling (JSON), model."""
    check_line(request, where, REQUEST_FIELDS, NAME)
    params = request.get("params")
    if not isinstance(params, dict):
        raise BatchFileError(f"{where}: field 'params' must be a JSON object (the Messages request)")
    check_fields(params, where, "params", KnownFields(PARAMS_FIELDS, REFUSED, "a Messages field"))
    if "max_tokens" not in params:
        raise BatchFileError(f"{where}: params.max_tokens is required (as at Anthropic)")
    if "metadata" in params and not isinstance(params["metadata"], dict):
        raise BatchFileError(f"{where}: params.metadata must be an object (as at Anthropic), got "
                             f"{kind_of(params['metadata'])}")
    messages = params.get("messages")
    if isinstance(messages, list):
        for i, m in enumerate(messages):
            if isinstance(m, dict):
                role_of(m, where, f"params.messages[{i}]", ROLES, "Anthropic's roles are user and assistant "
                                                                  "(the system prompt is params.system)")
    messages = openai_messages(messages, where)  # tool_use and tool_result blocks as OpenAI's messages
    system = text_of(params.get("system"), where, "params.system")
    sampling = {ours: params[theirs] for theirs, ours in sorted(SAMPLING_FIELDS.items()) if theirs in params}
    return sys.modules[__name__], [{
        "custom_id": request["custom_id"],
        "model": requested_model(params.get("model"), where, "params.model", models),
        "messages": chat_messages_of(messages, where, "params.messages", system=system),
        "sampling": json.dumps({**sampling, **tool_sampling(params, where), **thinking_sampling(params, where)})}]


def thinking_sampling(params: dict[str, Any], where: str) -> dict[str, Any]:
    """A request's thinking as vLLM's Anthropic server reads it: enabled, a thinking token budget
    (Anthropic's rules: at least 1024, less than max_tokens); disabled, the chat template's
    enable_thinking: false (vLLM's reasoning_effort none). Adaptive (its depth set by an effort,
    which is not a setting here), display and anything else are refused by name."""
    if "thinking" not in params:
        return {}
    thinking, field = params["thinking"], f"{where}: field {THINKING_FIELD}"
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled" and set(thinking) == {"type"}:
        return {"chat_template_kwargs": {"enable_thinking": False}}
    if kind == "adaptive":
        raise BatchFileError(f"{field}: type adaptive is not honoured here (its depth follows an effort, which "
                             f"is not a setting here): give {{type: enabled, budget_tokens}} or {{type: disabled}}")
    if kind != "enabled":
        raise BatchFileError(f"{field} must be {{type: enabled, budget_tokens}} or {{type: disabled}}, got "
                             f"{json.dumps(thinking)[:80]}")
    unknown = sorted(set(thinking) - {"type", "budget_tokens"})
    if unknown:
        raise BatchFileError(f"{field}.{unknown[0]} is not honoured here (takes type and budget_tokens; the "
                             f"thinking is returned whole)")
    budget = thinking.get("budget_tokens")
    if type(budget) is not int or budget < MIN_BUDGET:
        raise BatchFileError(f"{field}.budget_tokens must be an integer of at least {MIN_BUDGET} (as at "
                             f"Anthropic), got {json.dumps(budget)}")
    if type(params.get("max_tokens")) is int and budget >= params["max_tokens"]:
        raise BatchFileError(f"{field}.budget_tokens must be less than params.max_tokens (as at Anthropic), got "
                             f"{budget} with max_tokens {params['max_tokens']}")
    return {"thinking_token_budget": budget}


def stop_reason(row: dict[str, Any]) -> str:
    if row.get("finish_reason") == "length":
        return "max_tokens"
    if row.get("tool_calls"):
        return "tool_use"
    return "stop_sequence" if row.get("stop_sequence") else "end_turn"


def result_line(custom_id: str, row: dict[str, Any], created: int) -> tuple[dict, bool]:
    """One result line; and whether the row failed (Anthropic keeps both in one file)."""
    if row.get("error") is not None:
        return {"custom_id": custom_id, "result": {"type": "errored", "error": {"type": "error", "error": {
            "type": ERROR_TYPES.get(row.get("error_class"), "api_error"),
            "message": f"{row.get('error_class')}: {row['error']}"}}}}, True  # Anthropic's ErrorResponse
    message = {"id": f"msg_{custom_id}", "type": "message", "role": "assistant", "model": row["model"],
               "content": content_blocks(row), "stop_reason": stop_reason(row),
               "stop_sequence": row.get("stop_sequence"),
               "usage": {"input_tokens": row["prompt_tokens"], "output_tokens": row["completion_tokens"]}}
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}, False
