"""What every OpenAI batch line holds around its endpoint's body: in, {custom_id, method, url,
body}; out, {id, custom_id, response: {status_code, request_id, body}, error}, a failed request's
line going to the errors file, as OpenAI writes them. The bodies are the endpoints' own
(pipelines/formats/openai.py's table)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines.formats.lines import ERROR_TYPES, check_line, kind_of, shown, string_field
from spotbatch.errors import BatchFileError

NAME = "OpenAI"
REQUEST_FIELDS = {"custom_id", "method", "url", "body"}
DEFAULT_URL = "/v1/chat/completions"  # a line without a url, as spotbatch always read it
# The rows of a chat-shaped request (chat completions, responses): its messages as JSON.
MESSAGES_SCHEMA = pa.schema([("custom_id", pa.string()), ("messages", pa.string()), ("sampling", pa.string()),
                             ("model", pa.string())])


def url_of(request: Any, where: str) -> str:
    """The endpoint a request line names, after checking the line's own fields."""
    check_line(request, where, REQUEST_FIELDS, NAME)
    method = string_field(request.get("method", "POST"), where, "method")
    if method != "POST":
        raise BatchFileError(f"{where}: only POST requests can run here, got {shown(method)}")
    return string_field(request.get("url", DEFAULT_URL), where, "url")


def body_of(request: dict[str, Any], where: str) -> dict[str, Any]:
    body = request.get("body", {})
    if not isinstance(body, dict):
        raise BatchFileError(f"{where}: field 'body' must be a JSON object (the request body), got {kind_of(body)}")
    return body


def succeeded(custom_id: str, body: dict[str, Any]) -> tuple[dict, bool]:
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": f"req_{custom_id}", "body": body}, "error": None}, False


def failed(custom_id: str, row: dict[str, Any]) -> tuple[dict, bool]:
    """The errors file's line for a request whose row failed."""
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": None,
            "error": {"code": ERROR_TYPES.get(row.get("error_class"), "server_error"),
                      "message": f"{row.get('error_class')}: {row['error']}"}}, True


def max_tokens_of(body: dict[str, Any], where: str, names: tuple[str, ...]) -> dict[str, Any]:
    """{max_tokens} from the first of `names` the body has (they must agree), or {}."""
    given = [body[n] for n in names if n in body]
    if len(set(map(repr, given))) > 1:
        raise BatchFileError(f"{where}: body.{names[1]} and body.{names[0]} differ; give one")
    return {"max_tokens": given[0]} if given else {}
