"""OpenAI's Files routes: upload (multipart, purpose=batch), list, retrieve, content, delete."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from server.guard import too_large, unauthorized
from server.objects import RUNNING, ApiError, file_object, list_page, not_found
from server.state import new_id

router = APIRouter(prefix="/v1/files")
CHUNK = 1 << 20


def tenant_of(request: Request) -> str:
    """The caller's tenant, from its key (401 for a missing or unknown key)."""
    tenant = request.app.state.keys.tenant(request.headers.get("authorization"))
    if tenant is None:
        raise unauthorized()
    return tenant


@router.post("")
async def upload(request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()],
                 tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    limit = request.app.state.config.max_file_bytes
    if purpose != "batch":
        raise ApiError(400, f"purpose {purpose!r} is not served here: this server keeps batch input files "
                            f"(purpose 'batch')", code="invalid_value", param="purpose")
    with tempfile.TemporaryDirectory(prefix="spotbatch-upload-") as tmp:
        local, size = os.path.join(tmp, "content.jsonl"), 0
        with open(local, "wb") as out:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                out.write(chunk)
        meta = file_object(new_id("file-"), size=size, created_at=int(time.time()),
                           filename=os.path.basename(file.filename or "upload.jsonl"), purpose=purpose)
        request.app.state.state.add_file(tenant, meta, local)
    return meta


@router.get("")
def list_files(request: Request, purpose: str | None = None, after: str | None = None,
               limit: int = Query(10_000, ge=1, le=10_000), order: str = "desc",
               tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    files = [f for f in request.app.state.state.files(tenant) if purpose is None or f["purpose"] == purpose]
    files.sort(key=lambda f: (f["created_at"], f["id"]), reverse=order != "asc")
    if after is not None:
        ids = [f["id"] for f in files]
        files = files[ids.index(after) + 1:] if after in ids else []
    return list_page(files[:limit], len(files) > limit)


@router.get("/{file_id}")
def retrieve(request: Request, file_id: str, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    meta = request.app.state.state.file(tenant, file_id)
    if meta is None:
        raise not_found("File", file_id)
    return meta


@router.get("/{file_id}/content")
def content(request: Request, file_id: str, tenant: str = Depends(tenant_of)) -> StreamingResponse:
    state = request.app.state.state
    if state.file(tenant, file_id) is None:
        raise not_found("File", file_id)
    fh = state.open_content(tenant, file_id)

    def chunks():
        with fh:
            while data := fh.read(CHUNK):
                yield data

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@router.delete("/{file_id}")
def delete(request: Request, file_id: str, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
    state = request.app.state.state
    if state.file(tenant, file_id) is None:
        raise not_found("File", file_id)
    using = [b["id"] for b in state.batches(tenant) if b["input_file_id"] == file_id and b["status"] in RUNNING]
    if using:
        raise ApiError(409, f"file {file_id} is the input of batch {using[0]}, which is still running; cancel it "
                            f"first", code="file_in_use", param="file_id")
    state.delete_file(tenant, file_id)
    return {"id": file_id, "object": "file", "deleted": True}
