"""A Message Batch's inline requests checked at create, as Anthropic checks them: each read by the
reader a run uses (pipelines/formats/anthropic.py, which names the field), plus Anthropic's
custom_id rule, custom_ids unique in the batch, the models this server serves, and the most
requests a batch may hold. The first problem is refused (400), naming the request's index."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pipelines.formats import anthropic
from pipelines.formats.lines import kind_of, shown
from server.objects import ApiError
from server.request_checks import check_row, check_tools
from spotbatch.errors import BatchFileError

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # Anthropic's rule


@dataclass(frozen=True)
class Checked:
    """What a run needs of a checked batch: its requests as JSONL, and the models they name."""

    jsonl: bytes
    total: int
    models: list[str]  # in the order the requests first name them


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
    models, seen, lines = [], set(), []
    for i, request in enumerate(requests):
        model = _check_one(request, f"requests[{i}]", served, seen)
        if model not in models:
            models.append(model)
        lines.append(json.dumps(request))  # ASCII: no character in a string can end a line
    return Checked(("\n".join(lines) + "\n").encode(), len(requests), models)


def _check_one(request: Any, where: str, served: dict[str, Any], seen: set[str]) -> str:
    """The served model the request names; an ApiError names `where` and the field."""
    try:
        _, rows = anthropic.read_request(request, where, None)
    except BatchFileError as err:
        raise ApiError(400, str(err)) from None
    custom_id = request["custom_id"]  # a string: read_request checked it
    if not CUSTOM_ID.fullmatch(custom_id):
        raise ApiError(400, f"{where}: custom_id {shown(custom_id)} must be 1 to 64 characters of letters, digits, "
                            f"'_' and '-' (Anthropic's rule)")
    if custom_id in seen:
        raise ApiError(400, f"{where}: custom_id {shown(custom_id)} is used by an earlier request; each request "
                            f"needs a custom_id of its own")
    seen.add(custom_id)
    model = request["params"].get("model")
    if model not in served:
        raise ApiError(400, f"{where}: params.model {shown(model)} is not a model this server serves "
                            f"({', '.join(sorted(served))})")
    try:  # what the run would refuse, or could only make this request's error
        check_row(rows, where, served, anthropic)
        check_tools(rows, where, served, anthropic)
    except BatchFileError as err:
        raise ApiError(400, str(err)) from None
    return model
