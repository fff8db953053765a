"""Anthropic's Message Batches objects as its API returns them (MessageBatch, its request counts,
the deleted batch) and its error body, from the server's batch record.

A Message Batch is stored as every batch is (server/state.py: batches/<tenant>/<id>.json), in
the record the driver runs (OpenAI's batch object, endpoint /v1/messages), so the driver, a
restarted server and a status page read it as any other; this module shows it as Anthropic does.
Its inline requests are the JSONL input file the run reads (files/<tenant>/<id>-requests/content.jsonl,
with no file object: the Files API does not list it), those errored at create another
(<id>-errored, server/anthropic_errored.py), its results a third (<id>-results).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pipelines.formats.anthropic import ENDPOINT
from server.anthropic_requests import Checked
from server.objects import TERMINAL, batch_object

PREFIX = "msgbatch_"
COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")
# Anthropic's error type for each status (its errors page); any other 4xx is an invalid request.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 504: "timeout_error", 529: "overloaded_error"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error body, `{"type": "error", "error": {"type", "message"}}`, its type by status."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def requests_file(batch_id: str) -> str:
    """The id under files/ of a Message Batch's requests, as the run reads them."""
    return f"{batch_id}-requests"


def results_file(batch_id: str) -> str:
    return f"{batch_id}-results"


def new_record(batch_id: str, checked: Checked, expiry: str) -> dict[str, Any]:
    """The record of a new Message Batch: checked already (at create), so in_progress, its requests
    counted (those errored at create too, also counted apart for the status page) and its models
    known (none when every request is errored); it expires `expiry` ("24h") after its creation."""
    now = int(time.time())
    record = batch_object(batch_id, {"endpoint": ENDPOINT, "input_file_id": requests_file(batch_id),
                                     "completion_window": expiry}, now)
    models = checked.models
    record.update(status="in_progress", in_progress_at=now, model=models[0] if models else None,
                  spotbatch={"models": models, "errored_at_create": len(checked.errored)},
                  request_counts={"total": checked.total, "completed": 0, "failed": 0})
    return record


def message_batch(record: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The MessageBatch of a record; `base_url` (http://host:port) makes its results_url."""
    status = record["status"]
    ended = status in TERMINAL
    return {
        "id": record["id"], "type": "message_batch", "processing_status": processing_status(record),
        "request_counts": request_counts(record),
        "created_at": rfc3339(record["created_at"]), "expires_at": rfc3339(record["expires_at"]),
        "ended_at": rfc3339(record.get(f"{status}_at")) if ended else None,
        "cancel_initiated_at": rfc3339(record.get("cancelling_at")), "archived_at": None,
        "results_url": f"{base_url.rstrip('/')}/v1/messages/batches/{record['id']}/results" if ended else None,
    }


def processing_status(record: dict[str, Any]) -> str:
    """Anthropic's word for the record's status: in_progress, canceling or ended."""
    status = record["status"]
    return "ended" if status in TERMINAL else "canceling" if status == "cancelling" else "in_progress"


def request_counts(record: dict[str, Any]) -> dict[str, int]:
    """As Anthropic counts: every request `processing` until the batch ends, then each in its
    result's kind (a batch whose run broke: every request errored)."""
    counts = dict.fromkeys(COUNTS, 0)
    if record["status"] not in TERMINAL:
        counts["processing"] = record["request_counts"]["total"]
        return counts
    return {**counts, **(record.get("message_batch_counts") or {"errored": record["request_counts"]["total"]})}


def is_message_batch(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("endpoint") == ENDPOINT


def deleted(batch_id: str) -> dict[str, Any]:
    return {"id": batch_id, "type": "message_batch_deleted"}


def rfc3339(at: float | None) -> str | None:
    """A Unix time as Anthropic's RFC 3339 datetimes read.

    >>> rfc3339(0)
    '1970-01-01T00:00:00Z'
    """
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
