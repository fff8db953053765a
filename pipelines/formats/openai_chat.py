"""OpenAI `/v1/chat/completions` batch lines: the body read into a row, a row written out as a
`chat.completion`.

In, a body: {"model": "...", "messages": [...], "max_completion_tokens": 64, "temperature": 0.2,
"n": 2, "logprobs": true, "top_logprobs": 3, "response_format": {...}, "tools": [...],
"tool_choice": "required", ...}. Tools go into the row's sampling, and from there to the chat
template, the engine (a forced call) and the request key; earlier tool calls and tool results in
`messages` are passed to the chat template. Every body field is
honoured with OpenAI's meaning (a body without `temperature` samples at 1.0, as OpenAI does) or
refused by name.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.formats.lines import KnownFields, check_fields, requested_model
from pipelines.formats.messages import chat_messages_of
from pipelines.formats.openai_envelope import MESSAGES_SCHEMA, failed, max_tokens_of, succeeded
from pipelines.spec.tools import check_tool_choice, check_tools
from spotbatch.errors import BatchFileError

ENDPOINT = "/v1/chat/completions"
SCHEMA = MESSAGES_SCHEMA  # the Parquet a file of these requests is read into
PROMPT_COLUMN, FORMAT = "messages", "messages"  # the spec's input.prompt_column and input.format for it
LIST_INPUTS = False  # one row per request
# Body fields mapped onto the row's sampling (pipelines/spec/sampling.py's SamplingSpec, OpenAI's names).
SAMPLING_FIELDS = {"temperature", "top_p", "seed", "stop", "n", "logprobs", "top_logprobs", "response_format",
                   "presence_penalty", "frequency_penalty", "tools", "tool_choice", "parallel_tool_calls",
                   "chat_template_kwargs", "thinking_token_budget"}  # the last two: vLLM's server's extensions
THINKING_FIELD = "body.thinking_token_budget"  # needs model.reasoning_parser (pipelines/formats/request_checks.py)
# Fields that change no answer at OpenAI either: bookkeeping and delivery.
INERT_FIELDS = {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
REFUSED = {
    "functions": "deprecated by OpenAI; give tools instead",
    "function_call": "deprecated by OpenAI; give tool_choice instead", "audio": "audio is not generated here",
    "modalities": "only text is generated here", "stream": "a batch is not streamed",
    "stream_options": "a batch is not streamed",
    "logit_bias": "its token ids are OpenAI's tokenizer's, which mean nothing to another model",
    "prediction": "predicted outputs are not supported", "reasoning_effort": "no reasoning model setting here",
    "web_search_options": "web search is not run here",
}
BODY_FIELDS = SAMPLING_FIELDS | INERT_FIELDS | {"model", "messages", "max_tokens", "max_completion_tokens"}
# A body without these means OpenAI's defaults, not the spec's (pipelines/formats/batch_files.py).
DEFAULT_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "seed": None, "max_tokens": None, "n": 1}


def read_line(custom_id: str, body: dict[str, Any], where: str, models: list[str] | None) -> list[dict[str, Any]]:
    """The request's one row: custom_id, messages (JSON), sampling (JSON), model."""
    check_fields(body, where, "body", KnownFields(BODY_FIELDS, REFUSED, "an OpenAI chat completion field"))
    sampling = {k: body[k] for k in sorted(SAMPLING_FIELDS & set(body))}
    try:  # checked here, so a bad tool names its line
        check_tool_choice(body.get("tool_choice"), check_tools(body.get("tools")))
    except ValueError as err:
        raise BatchFileError(f"{where}: field body.{err}") from None
    sampling.update(max_tokens_of(body, where, ("max_completion_tokens", "max_tokens")))
    return [{"custom_id": custom_id,
             "model": requested_model(body.get("model"), where, "body.model", models),
             "messages": chat_messages_of(body.get("messages"), where, "body.messages"),
             "sampling": json.dumps(sampling)}]


FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def _logprobs(entries: list[dict] | None) -> dict | None:
    if entries is None:
        return None

    def token(t: dict) -> dict:
        text = t.get("token") or ""
        return {"token": text, "logprob": t["logprob"], "bytes": list(text.encode())}
    return {"content": [{**token(e), "top_logprobs": [token(t) for t in e.get("top_logprobs") or []]}
                        for e in entries]}


def choices_of(row: dict[str, Any]) -> list[tuple[dict, list | None]]:
    """A result row's choices (text, finish_reason), each with its logprobs (or None)."""
    choices = row.get("choices") or [{"text": row["output"], "finish_reason": row["finish_reason"]}]
    return list(zip(choices, row.get("logprobs") or [None] * len(choices)))


def message_of(row: dict[str, Any], text: str) -> dict[str, Any]:
    """The assistant message: its text, and the tool calls and reasoning the row kept apart."""
    calls = json.loads(row["tool_calls"]) if row.get("tool_calls") else None
    message: dict[str, Any] = {"role": "assistant", "content": None if calls and not text else text}
    if calls:
        message["tool_calls"] = calls
    if row.get("reasoning") is not None:
        message["reasoning_content"] = row["reasoning"]  # vLLM's and DeepSeek's name for it
    return message


def output_line(custom_id: str, rows: list[tuple[dict, dict]], created: int) -> tuple[dict, bool]:
    """The output line of one request from its (result row, input row); whether it failed."""
    row = rows[0][0]
    if row.get("error") is not None:
        return failed(custom_id, row)
    usage = {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
             "total_tokens": row["prompt_tokens"] + row["completion_tokens"]}
    if row.get("reasoning") is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": row.get("reasoning_tokens") or 0}
    body = {
        "id": f"chatcmpl-{custom_id}", "object": "chat.completion", "created": created, "model": row["model"],
        "choices": [{"index": i, "message": message_of(row, c["text"]),
                     "finish_reason": FINISH.get(c["finish_reason"] or "", c["finish_reason"]),
                     "logprobs": _logprobs(lp)} for i, (c, lp) in enumerate(choices_of(row))],
        "usage": usage,
    }
    return succeeded(custom_id, body)
