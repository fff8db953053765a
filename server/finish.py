"""What a batch's run leaves, in OpenAI's shapes: the output and error files (spotbatch's own
openai-batch export, pipelines/formats/export.py), `batch_expired` error lines for the requests a
deadline left undone, request counts, usage, and the run's cost from its ledger."""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from pipelines.formats.export import ExportRequest, export
from server.objects import file_object
from server.state import State
from spotbatch.errors import OutputError


def result_files(state: State, tenant: str, batch: dict[str, Any], expired: bool) -> dict[str, Any]:
    """The batch's output and error files written into the store; returns the batch fields they
    set: output_file_id, error_file_id, request_counts. With `expired`, each request with no
    line yet gets a `batch_expired` line in the error file."""
    with tempfile.TemporaryDirectory(prefix="spotbatch-serve-") as tmp:
        out, err = f"{tmp}/output.jsonl", f"{tmp}/output.errors.jsonl"
        try:
            export(ExportRequest(state.run_url(tenant, batch["id"]), "openai-batch", out, partial=True,
                                 storage_options=state.storage_options))
        except OutputError:  # no run there: it stopped before planning (a cancel while queued)
            open(out, "w").close()
            open(err, "w").close()
        answered = _custom_ids(out) | _custom_ids(err)
        if expired:
            with open(err, "a") as fh:
                for custom_id in _input_ids(state, tenant, batch["input_file_id"]):
                    if custom_id not in answered:
                        fh.write(json.dumps(_expired_line(custom_id)) + "\n")
        completed, failed = _lines(out), _lines(err)
        fields = {"request_counts": {"total": batch["request_counts"]["total"], "completed": completed,
                                     "failed": failed}}
        fields["output_file_id"] = _keep(state, tenant, out, batch["id"], "output") if completed else None
        fields["error_file_id"] = _keep(state, tenant, err, batch["id"], "error") if failed else None
    return fields


def _keep(state: State, tenant: str, local: str, batch_id: str, kind: str) -> str:
    """The result file's id is the batch's, so a server that died after writing it and before the
    batch object named it writes the same file again on restart, not a second one."""
    meta = file_object(f"file-{batch_id}-{kind}", size=os.path.getsize(local), created_at=int(time.time()),
                       filename=f"{batch_id}_{kind}.jsonl", purpose="batch_output")
    state.add_file(tenant, meta, local)
    return meta["id"]


def _expired_line(custom_id: str) -> dict[str, Any]:
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": None,
            "error": {"code": "batch_expired", "message": "This request could not be executed before the "
                      "completion window expired."}}


def _custom_ids(path: str) -> set[str]:
    with open(path) as fh:
        return {json.loads(line)["custom_id"] for line in fh if line.strip()}


def _lines(path: str) -> int:
    with open(path) as fh:
        return sum(1 for line in fh if line.strip())


def _input_ids(state: State, tenant: str, file_id: str):
    with state.open_content(tenant, file_id) as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)["custom_id"]  # checked at validation


def run_figures(state: State, tenant: str, batch_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(usage, spotbatch's cost fields) of the batch's run, from its status and ledger (what
    `spotbatch report` reads); None before the run is planned."""
    from jobs.report import latest_reference
    from pipelines.store.ledger import compute_ledger
    from pipelines.store.output import OutputStore
    from pipelines.store.status import run_status

    url = state.run_url(tenant, batch_id)
    store = OutputStore(url, state.storage_options)
    if store.read_manifest() is None:
        return None
    return figures_of(run_status(url, state.storage_options), compute_ledger(store, latest_reference(store)).summary)


def figures_of(status, summary) -> tuple[dict[str, Any], dict[str, Any]]:
    """(usage, cost fields) from a run's status and its ledger's summary, read once by the caller."""
    usage = {"input_tokens": status.prompt_tokens,
             "input_tokens_details": {"cached_tokens": status.cached_prompt_tokens},  # the prefix cache's
             "output_tokens": status.completion_tokens,
             "output_tokens_details": {"reasoning_tokens": status.reasoning_tokens},
             "total_tokens": status.prompt_tokens + status.completion_tokens}
    cost = {"cost_usd": summary.total_usd, "usd_per_1m_output_tokens": summary.usd_per_1m_output_tokens,
            "usd_per_1m_input_tokens": summary.usd_per_1m_input_tokens, "breakdown_usd": summary.breakdown_usd,
            "rows_done": status.rows_done, "rows_total": status.rows_total, "rows_failed": status.rows_failed}
    return usage, cost
