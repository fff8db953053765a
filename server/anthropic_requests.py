"""A Message Batch's inline requests checked at create, as Anthropic checks them. Refused (400,
naming the request's index): the body's shape, at most max_message_batch_requests requests, each
an object of a custom_id and params (an object), Anthropic's custom_id rule, custom_ids unique in
the batch. A request's params are checked too, by the reader a run uses
(pipelines/formats/anthropic.py, which names the field), the models this server serves, and what
the run would refuse (server/request_checks.py); but a bad one is not refused: as Anthropic checks
params asynchronously, that request is made `errored` (server/anthropic_errored.py), the message
naming its index and field, and the others run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pipelines.formats import anthropic
from pipelines.formats.lines import check_line, kind_of, shown
from server.objects import ApiError
from server.request_checks import check_row, check_tools
from spotbatch.errors import BatchFileError

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # Anthropic's rule


@dataclass(frozen=True)
class Checked:
    """What a run needs of a checked batch: its good requests as JSONL and the models they name,
    and the requests errored at create ({"index", "custom_id", "message"}, in order)."""

    jsonl: bytes
    total: int  # every request, errored ones too
    models: list[str]  # in the order the good requests first name them; none when every one is errored
    errored: list[dict[str, Any]]


def check_requests(body: Any, served: dict[str, Any], max_requests: int) -> Checked:
    """`served`: serve.yaml's models (name -> ServedModel)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {kind_of(body)}")
    unknown = sorted(set(body) - {"requests"})
    if unknown:
        raise ApiError(400, f"{unknown[0]}: Extra inputs are not permitted (a Message Batch takes `requests`)")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "requests: must be a list of at least one request ({custom_id, params})")
    if len(requests) > max_requests:
        raise ApiError(400, f"requests: a Message Batch holds at most {max_requests:,} requests, this one "
                            f"{len(requests):,}; split it")
    seen: set[str] = set()
    for i, request in enumerate(requests):
        _check_shape(request, f"requests[{i}]", seen)
    models, lines, errored = [], [], []
    for i, request in enumerate(requests):
        try:
            model = _check_params(request, f"requests[{i}]", served)
        except BatchFileError as err:
            errored.append({"index": i, "custom_id": request["custom_id"], "message": str(err)})
            continue
        if model not in models:
            models.append(model)
        lines.append(json.dumps(request) + "\n")  # ASCII: no character in a string can end a line
    return Checked("".join(lines).encode(), len(requests), models, errored)


def _check_shape(request: Any, where: str, seen: set[str]) -> None:
    """What Anthropic refuses at create of one request: an ApiError naming `where` and the field."""
    try:
        check_line(request, where, anthropic.REQUEST_FIELDS, anthropic.NAME)
    except BatchFileError as err:
        raise ApiError(400, str(err)) from None
    if not isinstance(request.get("params"), dict):
        raise ApiError(400, f"{where}: field 'params' must be a JSON object (the Messages request), got "
                            f"{kind_of(request.get('params'))}")
    custom_id = request["custom_id"]  # a string: check_line checked it
    if not CUSTOM_ID.fullmatch(custom_id):
        raise ApiError(400, f"{where}: custom_id {shown(custom_id)} must be 1 to 64 characters of letters, digits, "
                            f"'_' and '-' (Anthropic's rule)")
    if custom_id in seen:
        raise ApiError(400, f"{where}: custom_id {shown(custom_id)} is used by an earlier request; each request "
                            f"needs a custom_id of its own")
    seen.add(custom_id)


def _check_params(request: dict[str, Any], where: str, served: dict[str, Any]) -> str:
    """The served model the request's params name; a BatchFileError names `where` and the field."""
    _, rows = anthropic.read_request(request, where, None)
    model = request["params"].get("model")
    if model not in served:
        raise BatchFileError(f"{where}: params.model {shown(model)} is not a model this server serves "
                             f"({', '.join(sorted(served))})")
    check_row(rows, where, served, anthropic)  # what the run could only make this request's error
    check_tools(rows, where, served, anthropic)  # what the run would refuse the whole batch for
    return model
