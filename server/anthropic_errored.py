"""A Message Batch's requests whose params were refused at create. Anthropic checks each request's
params asynchronously: the batch is made, and such a request ends `errored` with an
invalid_request_error once the batch has ended, while the others run. Here they are known at
create (server/anthropic_requests.py), kept beside the batch before it is acknowledged, one JSON
line each, `{"index", "custom_id", "message"}`, in files/<tenant>/<id>-errored/content.jsonl (no
file object: the Files API does not list it), left out of the run's requests, and written into
the results when the batch ends, whatever ended it (they were never processing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from server.anthropic_objects import error_body
from server.state import State


def errored_file(batch_id: str) -> str:
    """The id under files/ of a Message Batch's requests errored at create."""
    return f"{batch_id}-errored"


def errored_jsonl(errored: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in errored).encode()


def errored_requests(state: State, tenant: str, batch_id: str) -> Iterator[dict[str, Any]]:
    """Each request errored at create, in the batch's order; none when the file is not there (a
    batch whose every request was good)."""
    path = state.storage.path(state.content_name(tenant, errored_file(batch_id)))
    if not state.storage.exists(path):
        return
    with state.storage.open(path) as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


def errored_result(errored: dict[str, Any]) -> dict[str, Any]:
    """The result line of a request errored at create, as Anthropic's errored result."""
    error = error_body(400, errored["message"])  # invalid_request_error
    return {"custom_id": errored["custom_id"], "result": {"type": "errored", "error": error}}


def request_index(line: int, skipped: list[int]) -> int:
    """The index in the batch's requests of line `line` (from 1) of the run's requests, which left
    out the requests at the indexes `skipped` (sorted).

    >>> request_index(2, [])
    1
    >>> request_index(2, [0, 2, 5])
    3
    """
    index = line - 1
    for s in skipped:
        if s > index:
            break
        index += 1
    return index
