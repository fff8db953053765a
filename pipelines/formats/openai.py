"""OpenAI Batch API files: chat completion requests in, output lines out.

In, one request per line:
    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "...", "messages": [...], "max_completion_tokens": 64, "temperature": 0.2,
              "n": 2, "logprobs": true, "top_logprobs": 3, "response_format": {...}, ...}}
Every body field is honoured with OpenAI's meaning (a body without `temperature` samples at
1.0, as OpenAI does) or refused by name. Out, per row:
    {"id": "...", "custom_id": "r1", "response": {"status_code": 200, "request_id": "...",
     "body": {chat.completion with every choice}}, "error": null}
and failed rows in a separate errors file, as the provider does.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.formats.lines import (
    ERROR_TYPES,
    KnownFields,
    check_fields,
    check_line,
    kind_of,
    requested_model,
    shown,
    string_field,
)
from pipelines.formats.messages import chat_messages_of
from spotbatch.errors import BatchFileError

NAME = "OpenAI"
ENDPOINT = "/v1/chat/completions"
REQUEST_FIELDS = {"custom_id", "method", "url", "body"}
# Body fields mapped onto the row's sampling (pipelines/spec/sampling.py's SamplingSpec, OpenAI's names).
SAMPLING_FIELDS = {"temperature", "top_p", "seed", "stop", "n", "logprobs", "top_logprobs", "response_format",
                   "presence_penalty", "frequency_penalty"}
# Fields that change no answer at OpenAI either: bookkeeping and delivery.
INERT_FIELDS = {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
REFUSED = {
    "tools": "tool calls are not run here", "tool_choice": "tool calls are not run here",
    "functions": "function calls are not run here", "function_call": "function calls are not run here",
    "parallel_tool_calls": "tool calls are not run here", "audio": "audio is not generated here",
    "modalities": "only text is generated here", "stream": "a batch is not streamed",
    "stream_options": "a batch is not streamed",
    "logit_bias": "its token ids are OpenAI's tokenizer's, which mean nothing to another model",
    "prediction": "predicted outputs are not supported", "reasoning_effort": "no reasoning model setting here",
    "web_search_options": "web search is not run here",
}
BODY_FIELDS = SAMPLING_FIELDS | INERT_FIELDS | {"model", "messages", "max_tokens", "max_completion_tokens"}
# A body without these means OpenAI's defaults, not the spec's (pipelines/formats/batch_files.py).
DEFAULT_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "seed": None, "max_tokens": None, "n": 1}


def read_request(request: Any, where: str, models: list[str] | None) -> dict[str, Any]:
    """One request line as a row: custom_id, messages (JSON), sampling (JSON), model."""
    check_line(request, where, REQUEST_FIELDS, NAME)
    method = string_field(request.get("method", "POST"), where, "method")
    if method != "POST":
        raise BatchFileError(f"{where}: only POST requests can run here, got {shown(method)}")
    url = string_field(request.get("url", ENDPOINT), where, "url")
    if url != ENDPOINT:
        raise BatchFileError(f"{where}: only {ENDPOINT} requests can run here, got {shown(url)}")
    body = request.get("body", {})
    if not isinstance(body, dict):
        raise BatchFileError(f"{where}: field 'body' must be a JSON object (the request body), got {kind_of(body)}")
    check_fields(body, where, "body", KnownFields(BODY_FIELDS, REFUSED, "an OpenAI chat completion field"))
    sampling = {k: body[k] for k in sorted(SAMPLING_FIELDS & set(body))}
    if "max_tokens" in body and "max_completion_tokens" in body and body["max_tokens"] != body["max_completion_tokens"]:
        raise BatchFileError(f"{where}: body.max_tokens and body.max_completion_tokens differ; give one")
    for field in ("max_completion_tokens", "max_tokens"):
        if field in body:
            sampling["max_tokens"] = body[field]
            break
    return {"custom_id": request["custom_id"],
            "model": requested_model(body.get("model"), where, "body.model", models),
            "messages": chat_messages_of(body.get("messages"), where, "body.messages"),
            "sampling": json.dumps(sampling)}


FINISH = {"stop": "stop", "length": "length"}


def _logprobs(entries: list[dict] | None) -> dict | None:
    if entries is None:
        return None

    def token(t: dict) -> dict:
        text = t.get("token") or ""
        return {"token": text, "logprob": t["logprob"], "bytes": list(text.encode())}
    return {"content": [{**token(e), "top_logprobs": [token(t) for t in e.get("top_logprobs") or []]}
                        for e in entries]}


def result_line(custom_id: str, row: dict[str, Any], created: int) -> tuple[dict, bool]:
    """One line of the provider's output file; and whether it belongs in the errors file."""
    if row.get("error") is not None:
        return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": None,
                "error": {"code": ERROR_TYPES.get(row.get("error_class"), "server_error"),
                          "message": f"{row.get('error_class')}: {row['error']}"}}, True
    choices = row.get("choices") or [{"text": row["output"], "finish_reason": row["finish_reason"]}]
    logprobs = row.get("logprobs") or [None] * len(choices)
    body = {
        "id": f"chatcmpl-{custom_id}", "object": "chat.completion", "created": created, "model": row["model"],
        "choices": [{"index": i, "message": {"role": "assistant", "content": c["text"]},
                     "finish_reason": FINISH.get(c["finish_reason"] or "", c["finish_reason"]),
                     "logprobs": _logprobs(lp)} for i, (c, lp) in enumerate(zip(choices, logprobs))],
        "usage": {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
                  "total_tokens": row["prompt_tokens"] + row["completion_tokens"]},
    }
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": f"req_{custom_id}", "body": body}, "error": None}, False
