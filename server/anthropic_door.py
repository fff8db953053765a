"""The door of Anthropic's routes (/v1/messages...), in plain ASGI, in front of the Guard
(server/guard.py): Anthropic's headers and Anthropic's error body.

- The key: `x-api-key` (Anthropic's header) or `Authorization: Bearer` (what the SDK sends with
  an auth token), the same keys and tenants as the OpenAI side. A missing or wrong one is a 401
  from the headers alone; a good one goes on as `Authorization: Bearer`, which the Guard and the
  routes read, so there is one way a key becomes a tenant.
- `anthropic-version` is required, as at Anthropic (400 without it).
- Every error answer on these routes, whoever made it (a route, the Guard's 413, FastAPI's 404
  or 422), leaves as `{"type": "error", "error": {"type", "message"}}`, its type by its status.
"""

from __future__ import annotations

import json
from typing import Any

from server.anthropic_objects import error_body

PREFIX = "/v1/messages"


class AnthropicDoor:
    def __init__(self, app, keys):
        self.app, self.keys = app, keys

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("x-api-key", "").strip()
        authorization = f"Bearer {key}" if key else headers.get("authorization")
        close = [(b"connection", b"close")]  # the body is left unread
        if self.keys.tenant(authorization) is None:
            return await _answer(send, 401, "invalid x-api-key: give a key of this server as `x-api-key: KEY` "
                                            "(or `Authorization: Bearer KEY`)", close)
        if not headers.get("anthropic-version", "").strip():
            return await _answer(send, 400, "anthropic-version: header is required", close)
        kept = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"authorization", b"x-api-key")]
        scope = {**scope, "headers": kept + [(b"authorization", authorization.encode("latin-1"))]}
        await self.app(scope, receive, _as_anthropic(send))


def _as_anthropic(send):
    """`send`, with an error answer's body (OpenAI's, as the app and the Guard write it) rewritten."""
    held: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held.update(message)
            return
        if not held or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        kept = [(k, v) for k, v in held.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
        await _answer(send, held["status"], _message_of(b"".join(chunks)), kept)

    return sending


def _message_of(body: bytes) -> str:
    try:
        found = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace") or "error"
    error = found.get("error") if isinstance(found, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return str(found.get("detail", "error")) if isinstance(found, dict) else "error"


async def _answer(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps(error_body(status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": (headers or []) + [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
