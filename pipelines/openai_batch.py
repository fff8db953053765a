"""The providers' batch format, both ways, so a batch job moves onto your own GPUs unchanged.

In: OpenAI batch JSONL, one request per line:
    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "...", "messages": [...], "max_tokens": 64}}
is read into Parquet shards in the output folder (_spotbatch/input/), columns custom_id,
messages (the JSON list), max_tokens; the run then reads those like any input. They are read
again only when the JSONL files change, and then the run refuses to mix answers, as for any
changed input.

Out: `spotbatch export OUTPUT --format openai-batch` writes the provider's output lines:
    {"id": "...", "custom_id": "r1", "response": {"status_code": 200, "request_id": "...",
     "body": {chat.completion}}, "error": null}
and failed rows in a separate errors file, as the provider does.
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipelines.inputs import InputError, expand_paths, file_version
from pipelines.store.output import OutputError, OutputStore
from pipelines.unit_rows import row_max_tokens

# What a request line may hold. Every field is honoured or refused by name: a sampling field
# dropped silently would be a wrong answer nobody notices. `body.model` is named and the spec's
# model answers (the export names the model that did).
REQUEST_FIELDS = {"custom_id", "method", "url", "body"}
BODY_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens"}
INPUT_DIR = "_spotbatch/input"
SOURCE = "_spotbatch/batch_source.json"  # beside, not inside, the folder read as input
ROWS_PER_SHARD = 50_000
SCHEMA = pa.schema([("custom_id", pa.string()), ("messages", pa.string()), ("max_tokens", pa.int64())])


def _listing(paths: list[str], storage_options: dict[str, Any]) -> list[dict[str, Any]]:
    files = []
    for path in paths:
        fs, fpath = url_to_fs(path, **storage_options)
        for m in sorted(expand_paths(fs, fpath)):
            info = fs.info(m)
            files.append({"path": fs.unstrip_protocol(m), "size": info.get("size"), "version": file_version(info)})
    if not files:
        raise InputError(f"no batch files at {', '.join(paths)}")
    return files


def _row(line: str, where: str) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not JSON ({err.msg})") from None
    if not isinstance(request, dict) or not isinstance(request.get("custom_id"), str):
        raise InputError(f"{where}: a batch request needs a string custom_id")
    unknown = sorted(set(request) - REQUEST_FIELDS)
    if unknown:
        raise InputError(f"{where}: field {unknown[0]!r} is not part of a batch request line")
    if request.get("method", "POST") != "POST":
        raise InputError(f"{where}: only POST requests can run here, got {request['method']!r}")
    url = request.get("url", "/v1/chat/completions")
    if url != "/v1/chat/completions":
        raise InputError(f"{where}: only /v1/chat/completions requests can run here, got {url}")
    body = request.get("body", {})
    if not isinstance(body, dict):
        raise InputError(f"{where}: field 'body' must be a JSON object (the request body), "
                         f"got {type(body).__name__}")
    unhonoured = sorted(set(body) - BODY_FIELDS)
    if unhonoured:
        raise InputError(
            f"{where}: field body.{unhonoured[0]} cannot be honoured per request yet (spotbatch reads "
            f"{', '.join(sorted(BODY_FIELDS))}); refused rather than dropped. Set sampling for the whole "
            f"run in the spec's `sampling` and remove it from the file")
    messages = body.get("messages")
    field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    # The providers take JSON integers only (64.0 is refused there too); the bounds are a Parquet row's.
    max_tokens, why = ((None, f"must be a positive integer, got {body[field]!r}") if isinstance(body.get(field), float)
                       else row_max_tokens(body.get(field)))
    if why:
        raise InputError(f"{where}: body.{field} {why}")
    return {
        "custom_id": request["custom_id"],
        # A request without a message list becomes an error record (bad_input), not a failed batch.
        "messages": json.dumps(messages) if isinstance(messages, list) and messages else None,
        "max_tokens": max_tokens,
    }


def read_batch_files(paths: list[str], storage_options: dict[str, Any], store: OutputStore,
                     new_run: bool = False) -> str:
    """Read the JSONL files into Parquet under the output (once per version of the files);
    returns the folder to read as input. Files that changed under an output holding a run are
    refused before anything is rewritten (with `new_run`, read again: that run is moved aside)."""
    listing = _listing(paths, storage_options)
    previous = store.read(SOURCE)
    if previous is not None and json.loads(previous) == listing:
        return store._path(INPUT_DIR)
    if previous is not None and store.read_manifest() is not None and not new_run:
        before = {f["path"]: f for f in json.loads(previous)}
        changed = [f["path"] for f in listing if before.get(f["path"]) != f] or sorted(before)
        raise OutputError(
            f"output path {store.url} holds a run of other batch files; what differs from it: input files "
            f"({', '.join(changed[:3])}). Use a new output path, or --new-run to move its results aside "
            f"and start over.")
    # Every request line is checked before anything is written: a bad line refuses the run and
    # leaves the output as it was.
    for _ in _requests(listing, storage_options):
        pass
    for name in store.find(INPUT_DIR):
        if name.endswith(".parquet"):
            store.fs.rm(store._path(name))
    shard, rows = 0, []

    def flush() -> None:
        nonlocal shard, rows
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buf)
        store.put(f"{INPUT_DIR}/part-{shard:05d}.parquet", buf.getvalue())
        shard, rows = shard + 1, []

    for row in _requests(listing, storage_options):
        rows.append(row)
        if len(rows) >= ROWS_PER_SHARD:
            flush()
    if rows or shard == 0:
        flush()
    store.put(SOURCE, json.dumps(listing).encode())
    return store._path(INPUT_DIR)


def _requests(listing: list[dict[str, Any]], storage_options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows of every request line of the listed files, in order."""
    for f in listing:
        fs, fpath = url_to_fs(f["path"], **storage_options)
        with fs.open(fpath, "rt") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    yield _row(line, f"{f['path']} line {n}")


def output_line(custom_id: str, row: dict[str, Any], model: str, created: int) -> tuple[dict, bool]:
    """One line of the provider's output file; and whether it belongs in the errors file."""
    request_id = f"req_{custom_id}"
    if row.get("error") is not None:
        return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": None,
                "error": {"code": row.get("error_class") or "error", "message": row["error"]}}, True
    finish = {"stop": "stop", "length": "length"}.get(row.get("finish_reason") or "", row.get("finish_reason"))
    body = {
        "id": f"chatcmpl-{custom_id}", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": row["output"]},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
                  "total_tokens": row["prompt_tokens"] + row["completion_tokens"]},
    }
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": body}, "error": None}, False


def resolve_input(spec, new_run: bool = False):
    """For a spec whose input is batch JSONL, the same spec reading the Parquet made from it."""
    if spec.input.kind != "openai_batch":
        return spec
    store = OutputStore(spec.output.path, spec.output.storage_options)
    store.check_is_ours()  # never write into a folder that holds someone else's files
    folder = read_batch_files(spec.input.paths, spec.input.storage_options, store, new_run)
    data = spec.model_dump(mode="json")
    data["input"].update(kind="parquet", paths=[store.fs.unstrip_protocol(folder)],
                         storage_options=spec.output.storage_options)
    return type(spec).model_validate(data)
