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
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipelines.inputs import InputError, expand_paths, file_version
from pipelines.store.output import OutputStore

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
    url = request.get("url", "/v1/chat/completions")
    if url != "/v1/chat/completions":
        raise InputError(f"{where}: only /v1/chat/completions requests can run here, got {url}")
    body = request.get("body") or {}
    messages = body.get("messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return {
        "custom_id": request["custom_id"],
        # A request without a message list becomes an error record (bad_input), not a failed batch.
        "messages": json.dumps(messages) if isinstance(messages, list) and messages else None,
        "max_tokens": max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None,
    }


def read_batch_files(paths: list[str], storage_options: dict[str, Any], store: OutputStore) -> str:
    """Read the JSONL files into Parquet under the output (once per version of the files);
    returns the folder to read as input."""
    listing = _listing(paths, storage_options)
    previous = store.read(SOURCE)
    if previous is not None and json.loads(previous) == listing:
        return store._path(INPUT_DIR)
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

    for f in listing:
        fs, fpath = url_to_fs(f["path"], **storage_options)
        with fs.open(fpath, "rt") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    rows.append(_row(line, f"{f['path']} line {n}"))
                if len(rows) >= ROWS_PER_SHARD:
                    flush()
    if rows or shard == 0:
        flush()
    store.put(SOURCE, json.dumps(listing).encode())
    return store._path(INPUT_DIR)


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


def resolve_input(spec):
    """For a spec whose input is batch JSONL, the same spec reading the Parquet made from it."""
    if spec.input.kind != "openai_batch":
        return spec
    store = OutputStore(spec.output.path, spec.output.storage_options)
    store.check_is_ours()  # never write into a folder that holds someone else's files
    folder = read_batch_files(spec.input.paths, spec.input.storage_options, store)
    data = spec.model_dump(mode="json")
    data["input"].update(kind="parquet", paths=[store.fs.unstrip_protocol(folder)],
                         storage_options=spec.output.storage_options)
    return type(spec).model_validate(data)
