"""A Message Batch's results when its run ends: spotbatch's own anthropic-batch export of the run
(pipelines/formats/export.py: succeeded and errored lines), then a `canceled` or `expired` line
for each request the run did not answer, as Anthropic ends a batch, and an `errored` line for
each request whose params were refused at create (server/anthropic_errored.py), however the
batch ended; one JSONL file in the store, and its counts. A batch whose run broke (the driver's
`failed`) keeps what its run committed, as Anthropic has no failed batch: each request it did not
answer is `errored`, saying why. One whose results could not be written has no file: every
request errored, with why (results_lines)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import Any

from pipelines.formats.export import ExportRequest, export
from server.anthropic_errored import errored_requests, errored_result
from server.anthropic_objects import COUNTS, error_body, results_file
from server.finish import _input_ids
from server.state import State
from spotbatch.errors import OutputError

UNANSWERED = {"cancelled": "canceled", "expired": "expired"}  # the driver's end -> Anthropic's result


def finish_message_batch(state: State, tenant: str, batch: dict[str, Any], status: str,
                         why: str | None = None) -> dict[str, Any]:
    """The results file written; returns the record's fields it sets (its counts, Anthropic's and
    the driver's own). `why`: with status `failed`, the error each unanswered request gets."""
    counts = dict.fromkeys(COUNTS, 0)
    with tempfile.TemporaryDirectory(prefix="spotbatch-serve-") as tmp:
        local = f"{tmp}/results.jsonl"
        try:
            export(ExportRequest(state.run_url(tenant, batch["id"]), "anthropic-batch", local, partial=True,
                                 storage_options=state.storage_options))
        except OutputError:  # no run there: it stopped before planning
            open(local, "w").close()
        answered = set()
        with open(local) as fh:
            for line in fh:
                result = json.loads(line)
                answered.add(result["custom_id"])
                counts[result["result"]["type"]] += 1
        with open(local, "a") as fh:
            for custom_id in _input_ids(state, tenant, batch["input_file_id"]):
                if custom_id not in answered:  # a completed run answered every request
                    result = unanswered(status, why)
                    fh.write(json.dumps({"custom_id": custom_id, "result": result}) + "\n")
                    counts[result["type"]] += 1
            for errored in errored_requests(state, tenant, batch["id"]):  # never processing: errored still
                fh.write(json.dumps(errored_result(errored)) + "\n")
                counts["errored"] += 1
        state.storage.put_from(state.storage.path(state.content_name(tenant, results_file(batch["id"]))), local,
                               durable=True)  # before the durable record that says the batch ended
    return {"message_batch_counts": counts, "output_file_id": None, "error_file_id": None,
            "request_counts": {"total": batch["request_counts"]["total"], "completed": counts["succeeded"],
                               "failed": counts["errored"]}}


def unanswered(status: str, why: str | None) -> dict[str, Any]:
    """The result of a request the run did not answer, by how the batch ended."""
    if status == "failed":
        return {"type": "errored", "error": error_body(500, why or "the server could not run the batch")}
    return {"type": UNANSWERED.get(status, "expired")}


def results_lines(state: State, tenant: str, batch: dict[str, Any]) -> Iterator[bytes]:
    """The results of an ended batch, as JSONL bytes."""
    path = state.storage.path(state.content_name(tenant, results_file(batch["id"])))
    if batch.get("message_batch_counts") is not None:
        with state.storage.open(path) as fh:
            while data := fh.read(1 << 20):
                yield data
        return
    errors = (batch.get("errors") or {}).get("data") or [{"message": "the server could not run the batch"}]
    error = error_body(500, errors[0]["message"])
    for custom_id in _input_ids(state, tenant, batch["input_file_id"]):
        yield (json.dumps({"custom_id": custom_id, "result": {"type": "errored", "error": error}}) + "\n").encode()
    for errored in errored_requests(state, tenant, batch["id"]):
        yield (json.dumps(errored_result(errored)) + "\n").encode()
