"""OpenAI's objects as its API returns them (files, batches, lists) and its error body, with
the status values OpenAI uses."""

from __future__ import annotations

from typing import Any

TERMINAL = ("failed", "completed", "expired", "cancelled")
RUNNING = ("validating", "in_progress", "finalizing", "cancelling")


class ApiError(Exception):
    """Raised when a request to the server is refused: becomes OpenAI's error body and status."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def not_found(kind: str, object_id: str, param: str = "id") -> ApiError:
    """OpenAI's 404 (another key's object is one too: whose it is is not told)."""
    return ApiError(404, f"No such {kind} object: {object_id}", code=None, param=param)


def file_object(file_id: str, *, size: int, created_at: int, filename: str, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": created_at, "filename": filename,
            "purpose": purpose, "status": "processed", "expires_at": None, "status_details": None}


def batch_object(batch_id: str, request: dict[str, Any], created_at: int) -> dict[str, Any]:
    """A new batch, validating, as POST /v1/batches returns it."""
    return {
        "id": batch_id, "object": "batch", "endpoint": request["endpoint"], "errors": None,
        "input_file_id": request["input_file_id"], "completion_window": request["completion_window"],
        "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": created_at,
        "in_progress_at": None, "expires_at": created_at + window_seconds(request["completion_window"]),
        "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
        "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": None, "metadata": request.get("metadata"), "model": None,
    }


def window_seconds(window: str) -> int:
    """A completion_window ("24h", or any duration spotbatch's deadline reads: "90m", "45s") in s.

    >>> window_seconds("24h"), window_seconds("1h30m"), window_seconds("45s")
    (86400, 5400, 45)
    """
    from pipelines.stops.deadline import _CLOCK, deadline_at

    if not isinstance(window, str) or not window.strip() or _CLOCK.match(window.strip()):
        raise ValueError(window)
    return int(deadline_at(window, 0.0))


def error_entry(message: str, line: int | None, code: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def list_page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": has_more}
