"""The gate in front of every route, in plain ASGI so it acts before a body is read: a missing or
wrong key is answered 401 from the headers alone, and a body is counted as it arrives (chunked
ones too, which carry no Content-Length) and answered 413 once past its route's cap."""

from __future__ import annotations

import json
from typing import Any

from server.objects import ApiError

OTHER_ROUTES_CAP = 1 << 20  # a JSON request (create a batch, cancel one) is far smaller


def unauthorized() -> ApiError:
    return ApiError(401, "Incorrect API key provided. Give a key of this server as `Authorization: Bearer KEY`.",
                    code="invalid_api_key", kind="invalid_request_error")


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"File is too large: the most this server takes is {limit:,} bytes "
                         f"({limit / 2**20:g} MB).", code="file_too_large", param="file")


class Guard:
    """ASGI middleware: 401 before the body, 413 while it is read. `upload_cap` is the most bytes a
    POST /v1/files body may have (the file plus its form); `post_caps` a POST path's own cap (a
    Message Batch's inline requests); every other route takes 1 MB."""

    def __init__(self, app, keys, max_file_bytes: int, upload_cap: int, post_caps: dict[str, int] | None = None):
        self.app, self.keys, self.max_file_bytes, self.upload_cap = app, keys, max_file_bytes, upload_cap
        self.post_caps = post_caps or {}

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.keys.tenant(headers.get("authorization")) is None:
            return await _refuse(send, unauthorized())
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/files"
        cap = self.upload_cap if upload else OTHER_ROUTES_CAP
        if scope["method"] == "POST" and scope["path"].rstrip("/") in self.post_caps:
            cap = self.post_caps[scope["path"].rstrip("/")]
        refusal = too_large(self.max_file_bytes) if upload else ApiError(
            413, f"Request body is too large: the most this route takes is {cap:,} bytes.", code="request_too_large")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            return await _refuse(send, refusal)
        seen, over, started = 0, False, False

        async def counted() -> dict[str, Any]:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:
                over = True
                raise refusal  # whatever the app makes of it, the 413 below answers
            return message

        async def held(message: dict[str, Any]) -> None:
            nonlocal started
            if not over:  # once over, the app's own answer to the broken body is dropped for the 413
                started = True
                await send(message)

        try:
            await self.app(scope, counted, held)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _refuse(send, refusal)


async def _refuse(send, err: ApiError) -> None:
    """OpenAI's error body; the connection is closed after it, since the body was left unread."""
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
