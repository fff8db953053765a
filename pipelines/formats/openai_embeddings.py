"""OpenAI `/v1/embeddings` batch lines: each input embedded (`task: embed`), answers written out
as OpenAI's embedding response.

In, a body: {"model", "input": "text" or ["text", ...] or [token id, ...] or [[token id, ...], ...],
"dimensions": 256, "encoding_format": "float" or "base64", "user"}. A list of inputs is several
rows of one custom_id (lines.row_ids), put back together in order in its output line. Token ids
are the served model's own, as vLLM's server reads them. `dimensions` is each request's own: one
its model cannot honour is refused at planning, naming its line, as `embed.dimensions` is
(pipelines/planning/embed_check.py), where the model's config.json is on this machine; elsewhere
the engine makes that request an error record, with vLLM's reason. Unknown fields are refused by name.

Out, the body: {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]
or base64 of little-endian float32}], "model", "usage": {"prompt_tokens", "total_tokens"}}.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.formats.lines import KnownFields, check_fields, kind_of, requested_model, row_ids, shown
from pipelines.formats.openai_envelope import failed, succeeded
from spotbatch.errors import BatchFileError

ENDPOINT = "/v1/embeddings"
TASK = "embed"  # what the run of such a file does (pipelines/formats/batch_files.py's resolve_input)
SCHEMA = pa.schema([("custom_id", pa.string()), ("input", pa.string()), ("sampling", pa.string()),
                    ("model", pa.string()), ("encoding_format", pa.string())])
PROMPT_COLUMN, FORMAT = "input", "messages"  # each row's input as JSON: a text or token ids (operators/embed.py)
LIST_INPUTS = True
DEFAULT_SAMPLING: dict[str, Any] = {}  # an embedding samples nothing
BODY_FIELDS = {"model", "input", "dimensions", "encoding_format", "user"}
ENCODINGS = ("float", "base64")


def read_line(custom_id: str, body: dict[str, Any], where: str, models: list[str] | None) -> list[dict[str, Any]]:
    """A row per input: custom_id (lines.row_ids), input (JSON), sampling (JSON: dimensions), model,
    encoding_format."""
    check_fields(body, where, "body", KnownFields(BODY_FIELDS, {}, "an OpenAI embeddings field"))
    options = {}
    if body.get("dimensions") is not None:
        d = body["dimensions"]
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise BatchFileError(f"{where}: body.dimensions must be a whole number >= 1, got {json.dumps(d)[:60]}")
        options["dimensions"] = d
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise BatchFileError(f"{where}: body.encoding_format must be float or base64, got {shown(encoding)}")
    inputs = _inputs(body.get("input"), where)
    model = requested_model(body.get("model"), where, "body.model", models)
    return [{"custom_id": row_id, "input": None if value is None else json.dumps(value),
             "sampling": json.dumps(options) if options else None, "model": model, "encoding_format": encoding}
            for row_id, value in zip(row_ids(custom_id, len(inputs), where), inputs)]


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def _inputs(given: Any, where: str) -> list[str | list[int] | None]:
    """The inputs of a body: a text, a list of texts, one token array, or a list of them. An
    empty text (which OpenAI refuses) makes its row an error record."""
    if isinstance(given, str):
        return [given or None]
    if _is_tokens(given):
        return [given]
    if not isinstance(given, list) or not given:
        raise BatchFileError(f"{where}: body.input must be a text, a list of texts, or token ids (a list of "
                             f"whole numbers, or a list of such lists), got {kind_of(given)}")
    for i, value in enumerate(given):
        if not isinstance(value, str) and not _is_tokens(value):
            raise BatchFileError(f"{where}: body.input[{i}] must be a text or a non-empty list of token ids, got "
                                 f"{kind_of(value)}")
    return [v or None for v in given]


def encoded(vector: list[float], encoding: str) -> list[float] | str:
    """A vector as OpenAI writes it: numbers, or base64 of its little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return [float(x) for x in vector]


def output_line(custom_id: str, rows: list[tuple[dict, dict]], created: int) -> tuple[dict, bool]:
    """The embedding response of one request from its rows' (result, input), in input order; a
    request any of whose inputs failed goes to the errors file, as at OpenAI."""
    for row, _ in rows:
        if row.get("error") is not None:
            return failed(custom_id, row)
    data = [{"object": "embedding", "index": i,
             "embedding": encoded(row["embedding"], source.get("encoding_format") or "float")}
            for i, (row, source) in enumerate(rows)]
    tokens = sum(row["prompt_tokens"] for row, _ in rows)
    body = {"object": "list", "data": data, "model": rows[0][0]["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return succeeded(custom_id, body)
