"""Anthropic's Message Batches routes: create, retrieve, list, cancel, delete, results. Each batch
is a spotbatch run of its requests, driven as every batch is (server/driver.py); the door in
front (server/anthropic_door.py) takes Anthropic's headers and gives Anthropic's error body."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import StreamingResponse

from server.anthropic_errored import errored_file, errored_jsonl
from server.anthropic_finish import results_lines
from server.anthropic_objects import (
    PREFIX,
    deleted,
    is_message_batch,
    message_batch,
    new_record,
    requests_file,
    results_file,
)
from server.anthropic_requests import check_requests
from server.files_api import tenant_of
from server.objects import TERMINAL, ApiError
from server.state import new_id

router = APIRouter(prefix="/v1/messages/batches")


@router.post("")
def create(request: Request, body: Annotated[Any, Body()], tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    app = request.app.state
    checked = check_requests(body, app.config.models, app.config.max_message_batch_requests)
    batch_id = new_id(PREFIX)
    state = app.state
    # Both on the disk before the batch record is (put_batch syncs it): on power loss no record
    # outlives its requests. The errored ones are kept before the batch is acknowledged: a
    # restarted server errors them all the same.
    if checked.errored:
        state.storage.put(state.storage.path(state.content_name(tenant, errored_file(batch_id))),
                          errored_jsonl(checked.errored), durable=True)
    state.storage.put(state.storage.path(state.content_name(tenant, requests_file(batch_id))), checked.jsonl,
                      durable=True)
    record = new_record(batch_id, checked, app.config.message_batch_expiry)
    state.put_batch(tenant, record)  # the requests first, then the batch: a batch listed is a batch whole
    app.driver.submit(tenant, batch_id)
    return message_batch(record, _base(request))


@router.get("/{batch_id}")
def retrieve(request: Request, batch_id: str, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    return message_batch(_record(request, tenant, batch_id), _base(request))


@router.get("")
def list_batches(request: Request, limit: int = Query(20, ge=1, le=1000), before_id: str | None = None,
                 after_id: str | None = None, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    """Newest first, as Anthropic lists: `after_id` pages to older batches, `before_id` to newer."""
    if before_id is not None and after_id is not None:
        raise ApiError(400, "before_id and after_id: give one of them, not both")
    records = sorted((b for b in request.app.state.state.batches(tenant) if is_message_batch(b)),
                     key=lambda b: (b["created_at"], b["id"]), reverse=True)
    ids = [b["id"] for b in records]
    if after_id is not None:
        older = records[ids.index(after_id) + 1:] if after_id in ids else []
        page, has_more = older[:limit], len(older) > limit
    elif before_id is not None:
        newer = records[:ids.index(before_id)] if before_id in ids else []
        page, has_more = newer[-limit:], len(newer) > limit
    else:
        page, has_more = records[:limit], len(records) > limit
    data = [message_batch(b, _base(request)) for b in page]
    return {"data": data, "has_more": has_more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


@router.post("/{batch_id}/cancel")
def cancel(request: Request, batch_id: str, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    state = request.app.state.state
    if _record(request, tenant, batch_id)["status"] in TERMINAL:
        raise ApiError(400, f"message batch {batch_id} has ended; only a batch in progress can be canceled")

    def canceling(b: dict[str, Any]) -> None:
        if b["status"] not in TERMINAL:
            b.update(status="cancelling", cancelling_at=b.get("cancelling_at") or int(time.time()))

    record = state.update_batch(tenant, batch_id, canceling)
    request.app.state.driver.cancel(tenant, batch_id)
    return message_batch(record, _base(request))


@router.delete("/{batch_id}")
def delete(request: Request, batch_id: str, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    """An ended batch only, as at Anthropic: its record first (unlisted), then its requests (those
    errored at create too), results and run."""
    state = request.app.state.state
    if _record(request, tenant, batch_id)["status"] not in TERMINAL:
        raise ApiError(400, f"message batch {batch_id} is still in progress; it can be deleted once it has ended "
                            f"(cancel it first)")
    storage = state.storage
    storage.delete(storage.path(f"batches/{tenant}/{batch_id}.json"))
    for name in (requests_file(batch_id), errored_file(batch_id), results_file(batch_id)):
        storage.delete(storage.path(f"files/{tenant}/{name}"), recursive=True)
    storage.delete(storage.path(f"runs/{tenant}/{batch_id}"), recursive=True)
    return deleted(batch_id)


@router.get("/{batch_id}/results")
def results(request: Request, batch_id: str, tenant: str = Depends(tenant_of)) -> StreamingResponse:
    record = _record(request, tenant, batch_id)
    if record["status"] not in TERMINAL:
        raise ApiError(400, f"message batch {batch_id} is still in progress; its results are there once it has "
                            f"ended (processing_status ended, results_url set)")
    return StreamingResponse(results_lines(request.app.state.state, tenant, record),
                             media_type="application/x-jsonl")


def _record(request: Request, tenant: str, batch_id: str) -> dict[str, Any]:
    """The batch's record: another key's, an OpenAI batch's or no batch's id is a 404 alike."""
    record = request.app.state.state.batch(tenant, batch_id)
    if not is_message_batch(record):
        raise ApiError(404, f"message batch {batch_id} not found")
    return record


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")
