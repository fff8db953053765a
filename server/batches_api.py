"""OpenAI's Batches routes: create, retrieve, list, cancel. A batch object is read from the
store; while its run works, its request counts and cost are the run's own, read as it goes."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from pipelines.formats.openai import ENDPOINTS
from server.anthropic_objects import is_message_batch
from server.files_api import tenant_of
from server.objects import TERMINAL, ApiError, batch_object, list_page, not_found, window_seconds
from server.state import new_id

router = APIRouter(prefix="/v1/batches")
MAX_METADATA = 16  # OpenAI's: 16 pairs, keys up to 64 characters, values up to 512


@router.post("")
def create(request: Request, body: Annotated[dict[str, Any], Body()],
           tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    state = request.app.state.state
    _check_create(body)
    meta = state.file(tenant, body["input_file_id"])
    if meta is None:
        raise not_found("File", body["input_file_id"], "input_file_id")
    if meta["purpose"] != "batch":
        raise ApiError(400, f"file {meta['id']} was not uploaded with purpose 'batch'", code="invalid_value",
                       param="input_file_id")
    batch = batch_object(new_id("batch_"), body, int(time.time()))
    state.put_batch(tenant, batch)
    request.app.state.driver.submit(tenant, batch["id"])
    return batch


def _check_create(body: dict[str, Any]) -> None:
    """Each field of a create request, refused by name as OpenAI does."""
    unknown = sorted(set(body) - {"input_file_id", "endpoint", "completion_window", "metadata"})
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                       code="unknown_parameter")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise ApiError(400, f"Missing required parameter: '{name}' (a string).", param=name,
                           code="missing_required_parameter")
    if body["endpoint"] not in ENDPOINTS:
        raise ApiError(400, f"endpoint {body['endpoint']!r} is not served; this server runs "
                            f"{', '.join(sorted(ENDPOINTS))}", param="endpoint", code="invalid_value")
    try:
        window_seconds(body["completion_window"])
    except ValueError:
        raise ApiError(400, f"completion_window {body['completion_window']!r} is not a duration like '24h' "
                            f"(or '90m', '1h30m', '45s')", param="completion_window", code="invalid_value") from None
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= MAX_METADATA and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items())):
        raise ApiError(400, "metadata must be an object of at most 16 string pairs (keys up to 64 characters, "
                            "values up to 512)", param="metadata", code="invalid_value")


@router.get("/{batch_id}")
def retrieve(request: Request, batch_id: str, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    return _live(request, tenant, _batch(request, tenant, batch_id))


@router.get("")
def list_batches(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                 tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    batches = sorted((b for b in request.app.state.state.batches(tenant) if not is_message_batch(b)),
                     key=lambda b: (b["created_at"], b["id"]), reverse=True)
    if after is not None:
        ids = [b["id"] for b in batches]
        batches = batches[ids.index(after) + 1:] if after in ids else []
    return list_page([_live(request, tenant, b) for b in batches[:limit]], len(batches) > limit)


@router.post("/{batch_id}/cancel")
def cancel(request: Request, batch_id: str, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    state = request.app.state.state
    batch = _batch(request, tenant, batch_id)
    if batch["status"] in TERMINAL:
        raise ApiError(409, f"Cannot cancel a batch with status {batch['status']}.", code="batch_not_cancellable")

    def cancelling(b: dict[str, Any]) -> None:
        if b["status"] not in TERMINAL:
            b.update(status="cancelling", cancelling_at=b.get("cancelling_at") or int(time.time()))

    batch = state.update_batch(tenant, batch_id, cancelling)
    request.app.state.driver.cancel(tenant, batch_id)
    return _live(request, tenant, batch)


def _batch(request: Request, tenant: str, batch_id: str) -> dict[str, Any]:
    batch = request.app.state.state.batch(tenant, batch_id)
    if batch is None or is_message_batch(batch):  # a Message Batch is Anthropic's routes' to show
        raise not_found("Batch", batch_id)
    return batch


def _live(request: Request, tenant: str, batch: dict[str, Any]) -> dict[str, Any]:
    """A running batch with its run's request counts, usage and cost so far (finalizing too: its
    stored counts are set only when it ends)."""
    if batch["status"] not in ("in_progress", "finalizing", "cancelling"):
        return batch
    from server.live_counts import FIGURES, request_counts

    state = request.app.state.state
    figures = FIGURES.get(state, tenant, batch["id"])
    counts = request_counts(state, tenant, batch)
    if figures is None or counts is None:
        return batch
    usage, cost = figures
    return {**batch, "request_counts": counts, "usage": usage, "spotbatch": {**batch.get("spotbatch", {}), **cost}}
