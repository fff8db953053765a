"""OpenAI Batch API files: one endpoint's requests in, that endpoint's output lines out.

In, one request per line, {"custom_id": "r1", "method": "POST", "url": <endpoint>, "body": {...}};
out, {"id", "custom_id", "response": {"status_code": 200, "request_id", "body"}, "error": null},
and failed requests in a separate errors file, as OpenAI writes them (openai_envelope.py).

Each endpoint is a small module in ENDPOINTS, with
    ENDPOINT        its url
    SCHEMA          the Parquet columns its rows are read into (custom_id first: the row's id)
    PROMPT_COLUMN, FORMAT   the spec's input.prompt_column and input.format for those rows
    LIST_INPUTS     whether one request may be several rows (lines.row_ids names them)
    DEFAULT_SAMPLING  what a body that leaves a sampling field out means at OpenAI
    TASK            (optional) the spec's task for its rows: embed for /v1/embeddings, else generate
    read_line(custom_id, body, where, models) -> [row, ...]
    output_line(custom_id, [(result row, input row), ...], created) -> (line, failed)
and, optionally, SPEC: top-level spec fields its rows need (e.g. {"task": "embed"}).
A file holds one endpoint's requests, as at OpenAI (pipelines/formats/batch_files.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from pipelines.formats import openai_chat, openai_completions, openai_embeddings, openai_responses
from pipelines.formats.lines import shown
from pipelines.formats.openai_envelope import DEFAULT_URL, NAME, body_of, url_of
from spotbatch.errors import BatchFileError

__all__ = ["NAME", "ENDPOINT", "ENDPOINTS", "read_request"]
ENDPOINT = DEFAULT_URL  # a line without a url, and a file without lines, are chat completions

ENDPOINTS: dict[str, ModuleType] = {m.ENDPOINT: m for m in (
    openai_chat,
    openai_completions,
    openai_responses,
    openai_embeddings,
)}


def read_request(request: Any, where: str, models: list[str] | None) -> tuple[ModuleType, list[dict[str, Any]]]:
    """One request line: its endpoint's module, and the rows it becomes."""
    url = url_of(request, where)
    endpoint = ENDPOINTS.get(url)
    if endpoint is None:
        raise BatchFileError(f"{where}: url {shown(url)} is not an endpoint spotbatch runs; it runs "
                             f"{', '.join(sorted(ENDPOINTS))}")
    return endpoint, endpoint.read_line(request["custom_id"], body_of(request, where), where, models)
