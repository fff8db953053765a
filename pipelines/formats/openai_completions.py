"""OpenAI `/v1/completions` batch lines: prompts sent as they are (no chat template, as Parquet
rows with `input.format: raw`), answers written out as `text_completion` objects.

In, a body: {"model", "prompt": "text" or ["text", ...], "max_tokens": 16, "temperature",
"top_p", "n", "stop", "seed", "logprobs": 3, "echo": true, "presence_penalty",
"frequency_penalty", "user"}. A list of prompts is several rows of one custom_id
(lines.row_ids); its output line holds every prompt's choices, prompt by prompt, `index`
counting through them, as OpenAI's does. A body that leaves a field out means OpenAI's default
(16 tokens, temperature 1.0). `suffix`, `best_of`, `logit_bias`, `stream`, token-id prompts and
unknown fields are refused by name.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from pipelines.formats.lines import KnownFields, check_fields, kind_of, requested_model, row_ids
from pipelines.formats.openai_chat import FINISH, choices_of
from pipelines.formats.openai_envelope import failed, succeeded
from spotbatch.errors import BatchFileError

ENDPOINT = "/v1/completions"
SCHEMA = pa.schema([("custom_id", pa.string()), ("prompt", pa.string()), ("sampling", pa.string()),
                    ("model", pa.string()), ("echo", pa.bool_())])
PROMPT_COLUMN, FORMAT = "prompt", "raw"  # the text as it is: no chat template
LIST_INPUTS = True
SAMPLING_FIELDS = {"temperature", "top_p", "seed", "stop", "n", "presence_penalty", "frequency_penalty",
                   "max_tokens"}
INERT_FIELDS = {"user"}
REFUSED = {
    "suffix": "text after the insertion point (fill-in-the-middle) is not generated here",
    "best_of": "ranking candidates server-side is not done here; ask for n choices instead",
    "logit_bias": "its token ids are OpenAI's tokenizer's, which mean nothing to another model",
    "stream": "a batch is not streamed", "stream_options": "a batch is not streamed",
}
BODY_FIELDS = SAMPLING_FIELDS | INERT_FIELDS | {"model", "prompt", "logprobs", "echo"}
# OpenAI's defaults for a completion (its API reference: max_tokens defaults to 16).
DEFAULT_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "seed": None, "max_tokens": 16, "n": 1}


def read_line(custom_id: str, body: dict[str, Any], where: str, models: list[str] | None) -> list[dict[str, Any]]:
    """A row per prompt: custom_id (lines.row_ids), prompt, sampling (JSON), model, echo."""
    check_fields(body, where, "body", KnownFields(BODY_FIELDS, REFUSED, "an OpenAI completion field"))
    # null is the field left out, as OpenAI reads it
    sampling = {k: body[k] for k in sorted(SAMPLING_FIELDS & set(body)) if body[k] is not None}
    if "logprobs" in body and body["logprobs"] is not None:
        k = body["logprobs"]
        if isinstance(k, bool) or not isinstance(k, int):
            raise BatchFileError(f"{where}: body.logprobs must be an integer (how many likeliest tokens to "
                                 f"return at each position), got {kind_of(k)}")
        sampling.update(logprobs=True, top_logprobs=k)
    echo = False if body.get("echo") is None else body["echo"]  # null is the default, as every field's null
    if not isinstance(echo, bool):
        raise BatchFileError(f"{where}: body.echo must be true or false, got {kind_of(echo)}")
    if echo and "top_logprobs" in sampling:
        raise BatchFileError(f"{where}: field body.echo with body.logprobs cannot be honoured: the prompt's own "
                             f"logprobs are not returned here; refused rather than dropped. Remove one")
    prompts = _prompts(body.get("prompt"), where)
    model = requested_model(body.get("model"), where, "body.model", models)
    return [{"custom_id": row_id, "prompt": prompt, "sampling": json.dumps(sampling), "model": model, "echo": echo}
            for row_id, prompt in zip(row_ids(custom_id, len(prompts), where), prompts)]


def _prompts(prompt: Any, where: str) -> list[str | None]:
    """The prompts of a body: one string, or a list of them. None (no prompt) makes the row an
    error record, as a request OpenAI would refuse."""
    if prompt is None or isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list):
        raise BatchFileError(f"{where}: body.prompt must be a string or a list of strings, got {kind_of(prompt)}")
    if not prompt:
        return [None]
    for i, p in enumerate(prompt):
        if isinstance(p, (int, list)) and not isinstance(p, bool):
            raise BatchFileError(f"{where}: field body.prompt[{i}] cannot be honoured: token ids are OpenAI's "
                                 f"tokenizer's, which mean nothing to another model; give the text")
        if not isinstance(p, str):
            raise BatchFileError(f"{where}: body.prompt[{i}] must be a string, got {kind_of(p)}")
    return list(prompt)


def _logprobs(entries: list[dict] | None, offset: int) -> dict | None:
    """OpenAI's completion logprobs: each token, its logprob, its likeliest alternatives, and
    where it starts in the choice's text."""
    if entries is None:
        return None
    tokens = [e.get("token") or "" for e in entries]
    starts = [offset + sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {"tokens": tokens, "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e.get("top_logprobs") or []} for e in entries],
            "text_offset": starts}


def output_line(custom_id: str, rows: list[tuple[dict, dict]], created: int) -> tuple[dict, bool]:
    """The `text_completion` of one request from its rows' (result, input), in prompt order."""
    for row, _ in rows:
        if row.get("error") is not None:
            return failed(custom_id, row)
    choices = []
    for row, source in rows:
        echoed = (source.get("prompt") or "") if source.get("echo") else ""
        for c, lp in choices_of(row):
            choices.append({"index": len(choices), "text": echoed + c["text"],
                            "finish_reason": FINISH.get(c["finish_reason"] or "", c["finish_reason"]),
                            "logprobs": _logprobs(lp, len(echoed))})
    prompt_tokens = sum(row["prompt_tokens"] for row, _ in rows)
    completion_tokens = sum(row["completion_tokens"] for row, _ in rows)
    body = {"id": f"cmpl-{custom_id}", "object": "text_completion", "created": created, "model": rows[0][0]["model"],
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}
    return succeeded(custom_id, body)
