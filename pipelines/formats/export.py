"""Results in the formats other tools read, written unit by unit (memory stays per unit).
The formats are pipelines/formats/'s; this only checks, reads and dispatches.

    openai-batch     OpenAI's batch output lines, each in its endpoint's shape (the batch files'
                     one endpoint; chat completions for a Parquet run), failed requests in a
                     separate errors file: `<to>` and `<to minus .jsonl>.errors.jsonl`
    anthropic-batch  Anthropic's Message Batches result lines, succeeded and errored in one file
    chat-jsonl       training data for distillation (pipelines/formats/training.py)
    pairs-parquet    prompt/response pairs with token counts, one Parquet file

A destination that exists is refused: an export never overwrites anything.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fsspec.core import url_to_fs

from operators.prompts import chat_messages
from pipelines.formats import anthropic, openai, openai_chat, openai_embeddings
from pipelines.formats.batch_files import endpoint_of
from pipelines.formats.lines import request_of
from pipelines.formats.training import write_chat_jsonl, write_pairs_parquet
from pipelines.log import console
from pipelines.planning.inputs import list_shards
from pipelines.planning.units import Plan, fingerprint_parts
from pipelines.redact import credentials_hint, describe, output_options, recorded_spec, redact_url
from pipelines.spec import PipelineSpec
from pipelines.store.new_file import new_file
from pipelines.store.output import OutputError, OutputStore
from pipelines.stream.unit_rows import ID, PROMPT, read_unit_rows, unit_rows

log = logging.getLogger("spotbatch.export")

FORMATS = ("openai-batch", "anthropic-batch", "chat-jsonl", "pairs-parquet")


def answered_by(row: dict[str, Any]) -> dict[str, Any]:
    """A result row whose `model` is what answered it as its request named it: a LoRA adapter's name
    for a row of an adapter (model.adapters), the model's otherwise."""
    return {**row, "model": row["adapter"]} if row.get("adapter") else row


def _rows(store: OutputStore, spec: PipelineSpec, plan: Plan) -> Iterator[tuple[dict[str, Any], list[dict] | None]]:
    """(result row, the chat messages it answered) for every row, unit by unit."""
    inp = spec.input
    for unit in plan.units:
        results = [answered_by(r) for r in store.read_unit(unit.unit_id).to_pylist()]
        source = unit_rows(unit.descriptor(), spec)  # the prompts as the run rendered them
        by_id = dict(zip(source.column(ID).to_pylist(), source.column(PROMPT).to_pylist()))
        for row in results:
            prompt = by_id.get(row[inp.id_column])
            if prompt is None:
                yield row, None
                continue
            yield row, chat_messages(prompt, inp.system_prompt, inp.format)


@dataclass(frozen=True)
class ExportRequest:
    """One export, as `spotbatch export` and spotbatch.export (spotbatch/api.py) are asked for it."""

    output: str
    """The run's output folder, local or a URL."""
    fmt: str
    """One of FORMATS."""
    to: str
    """The file to write; one that exists is refused."""
    include_truncated: bool = False
    """chat-jsonl: keep answers cut off at max_tokens."""
    storage_options: dict[str, Any] | None = None
    """fsspec options for the output (else from `overrides`)."""
    overrides: list[str] = field(default_factory=list)
    """`--set KEY=VALUE` texts, for credentials the output does not keep."""
    partial: bool = False
    """Export an unfinished run's committed units."""


@dataclass(frozen=True)
class _Target:
    """Where an export writes: the file, and OpenAI's separate file of failed requests."""

    fs: Any
    path: str
    errors_path: str


def export(request: ExportRequest) -> dict[str, int]:
    """Write the export; returns counts of what went where. The output's own spec says where
    the prompts are; credentials come from `overrides` (`--set`) and the environment, never
    from the output. An unfinished run is refused unless `partial`."""
    console()
    output, fmt, overrides = request.output, request.fmt, request.overrides or []
    if fmt not in FORMATS:
        raise OutputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    store = OutputStore(output, request.storage_options or output_options(overrides))
    manifest = store.require_manifest()
    spec, plan = recorded_spec(manifest["spec"], overrides), Plan.from_json(manifest)
    if spec.task == "embed" and fmt not in ("openai-batch",):
        raise OutputError(f"export --format {fmt}: {redact_url(output)} holds embeddings, not answers; export "
                          f"them with --format openai-batch, or read its Parquet (the embedding column)")
    log.info("reading prompts as the output's own spec says: %s", describe(spec))
    missing = {u.unit_id for u in plan.units} - store.committed_units()
    if missing and not request.partial:
        raise OutputError(f"{redact_url(output)} is not finished ({len(missing)} of {len(plan.units)} units "
                          f"pending): run it to the end, or export what is there with --partial")
    plan.units = [u for u in plan.units if u.unit_id not in missing]
    # Prompts are read again from the input: never pair new prompts with old answers.
    with credentials_hint(manifest["spec"]):
        now = fingerprint_parts(spec, list_shards(spec.input))["input files"]
    if now != manifest["parts"]["input files"]:
        paths = ", ".join(redact_url(p) for p in spec.input.paths)
        raise OutputError(f"the input of {redact_url(output)} changed since its run ({paths}): an "
                          f"export would pair today's prompts with the answers to the old ones. Restore the "
                          f"input, or run the spec again with --new-run.")
    fs, path = url_to_fs(request.to)
    errors_path = (path[: -len(".jsonl")] if path.endswith(".jsonl") else path) + ".errors.jsonl"
    for p in (path, errors_path) if fmt == "openai-batch" else (path,):
        if fs.exists(p):
            raise OutputError(f"{fs.unstrip_protocol(p)} exists; an export never overwrites: choose a new name")
    try:
        return _write(store, spec, plan, request, _Target(fs, path, errors_path))
    except FileExistsError:
        raise OutputError(f"{fs.unstrip_protocol(path)} was created by another export while this one ran; "
                          f"an export never overwrites: choose a new name") from None


def _write(store: OutputStore, spec: PipelineSpec, plan: Plan, request: ExportRequest,
           target: _Target) -> dict[str, int]:
    fmt, fs, path = request.fmt, target.fs, target.path
    counts = {"rows": 0, "written": 0, "errors": 0, "skipped": 0}
    rows = _rows(store, spec, plan)
    if fmt == "pairs-parquet":
        with new_file(fs, path, text=False) as fh:
            write_pairs_parquet(fh, rows, spec.input.id_column, counts)
        return counts
    if fmt == "chat-jsonl":
        with new_file(fs, path) as out:
            write_chat_jsonl(out, rows, request.include_truncated, counts)
        return counts
    created = int(time.time())
    if fmt == "anthropic-batch":  # succeeded and errored requests in one file
        with new_file(fs, path) as out:
            for row, _ in rows:
                counts["rows"] += 1
                line, failed = anthropic.result_line(str(row[spec.input.id_column]), row, created)
                out.write(json.dumps(line) + "\n")
                counts["errors" if failed else "written"] += 1
        return counts
    url = endpoint_of(store)
    # A Parquet run's rows answer as chat, or as embeddings (task embed); an Anthropic file's as chat
    endpoint = (openai.ENDPOINTS.get(url, openai_chat) if url else openai_embeddings if spec.task == "embed"
                else openai_chat)
    with new_file(fs, path) as out, new_file(fs, target.errors_path) as err:  # OpenAI: failed requests apart
        for custom_id, pairs in _openai_requests(store, spec, plan, (endpoint, url is not None), counts):
            # pairs[i][0]["model"]: the model that answered the row (a routed run has several)
            line, failed = endpoint.output_line(custom_id, pairs, created)
            (err if failed else out).write(json.dumps(line) + "\n")
            counts["errors" if failed else "written"] += len(pairs)  # rows, as every format counts them
    return counts


def _openai_requests(store: OutputStore, spec: PipelineSpec, plan: Plan, read_as: tuple[Any, bool],
                     counts: dict[str, int]) -> Iterator[tuple[str, list[tuple[dict, dict]]]]:
    """Each request's custom_id and its rows' (result row, input row), unit by unit; the rows of
    a request of several (lines.row_ids) put back together in order. With `partial`, a request
    whose rows are not all committed is left out (its rows counted as skipped)."""
    endpoint, batch = read_as
    pending: dict[str, dict[int, tuple[dict, dict]]] = {}
    for unit in plan.units:
        inputs: dict[Any, dict] = {}
        if batch:  # the request as read from the batch file (an echo's prompt, a response's metadata)
            table = read_unit_rows(unit.path, unit.start, unit.stop, endpoint.SCHEMA.names, spec.input.storage_options)
            inputs = {r["custom_id"]: r for r in table.to_pylist()}
        for row in map(answered_by, store.read_unit(unit.unit_id).to_pylist()):
            counts["rows"] += 1
            row_id = row[spec.input.id_column]
            custom_id, index, count = request_of(str(row_id)) if endpoint.LIST_INPUTS else (str(row_id), 0, 1)
            got = pending.setdefault(custom_id, {})
            got[index] = (row, inputs.get(row_id, {}))
            if len(got) == count:
                del pending[custom_id]
                yield custom_id, [got[i] for i in range(count)]
    counts["skipped"] += sum(len(got) for got in pending.values())
