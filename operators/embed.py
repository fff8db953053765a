"""The embed operator: each row's text in, its vector out (`task: embed`).

The generate operator's way through (operators/generate.py: identical requests embedded once,
the response cache, the engine feeder, error records, the unit's deadline) with its own
requests and columns: a row's text is tokenized as it is, with the model's special tokens and
no chat template; one longer than the model's context is an error record (`context_too_long`),
or cut to `truncate_prompt_tokens` when the spec asks.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from operators.batching import Request
from operators.engine import Embedding, RowRejected
from operators.failures import BAD_INPUT, CONTEXT_TOO_LONG
from operators.generate import GenerateOperator, RowBatch

# prompt_tokens: the tokens the vector was made from (after any truncation); served_from,
# queued_s and generate_s as generation's (operators/generate.py).
ANSWER_FIELDS = ("embedding", "prompt_tokens")


def embed_schema(size: int | None) -> pa.Schema:
    """The result columns of an embedding run; `embedding` is a list of `size` numbers (a
    fixed-size list), or of any length while the size is not known."""
    vector = pa.list_(pa.float32(), size) if size else pa.list_(pa.float32())
    return pa.schema([
        ("embedding", vector), ("prompt_tokens", pa.int64()), ("error", pa.string()), ("error_class", pa.string()),
        ("served_from", pa.string()), ("queued_s", pa.float64()), ("generate_s", pa.float64()),
    ])


EMBED_COLUMNS = tuple(embed_schema(None).names)


def empty_embeddings(errors: list[str | None], error_class: str = BAD_INPUT) -> dict[str, list[Any]]:
    """Result columns for rows not (yet) embedded: a row with an error gets `error_class`."""
    cols: dict[str, list[Any]] = {c: [None] * len(errors) for c in EMBED_COLUMNS}
    cols["prompt_tokens"] = [0] * len(errors)
    cols["error"] = list(errors)
    cols["error_class"] = [error_class if e is not None else None for e in errors]
    return cols


def embedding_of(done: Embedding) -> dict[str, Any]:
    return {"embedding": done.vector, "prompt_tokens": done.prompt_tokens, "queued_s": done.queued_s,
            "generate_s": done.generate_s}


def token_ids_of(prompt: str, fmt: str) -> str | list[int]:
    """A row's input: its text, or (fmt `messages`: an embeddings batch file's rows hold JSON)
    a text or a list of token ids. Raises ValueError for anything else."""
    if fmt != "messages":
        return prompt
    value = json.loads(prompt)
    if isinstance(value, str) or (isinstance(value, list) and value and all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)):
        return value
    raise ValueError("an input must be a text or a non-empty list of token ids")


class EmbedOperator(GenerateOperator):
    """Reads `prompt` text (or a prior `error`) per row; writes embed_schema's columns.
    `embed`: the spec's EmbedSpec fields (dimensions, normalize, truncate_prompt_tokens)."""

    answer_fields = ANSWER_FIELDS
    _empty = staticmethod(empty_embeddings)
    _answer = staticmethod(embedding_of)

    def _request(self, i: int, prompt: str, batch: RowBatch, result: dict[str, list[Any]]) -> Request | RowRejected:
        """Row i's engine request, or (the row made an error) why it was refused."""
        context = self.engine.max_model_len
        own = batch.samplings[i] if batch.samplings and batch.samplings[i] else None  # a batch file's request's
        cut = {**self.sampling, **(own or {})}.get("truncate_prompt_tokens")
        limit = None if cut is None else context if cut == -1 else min(cut, context)
        try:
            given = token_ids_of(prompt, self.form.fmt)
        except (ValueError, TypeError) as err:
            self._fail(result, i, BAD_INPUT, f"input could not be read: {err}")
            return RowRejected(str(err))
        ids = self.engine.encode_text(given, limit) if isinstance(given, str) else given[:limit]
        if len(ids) > context:
            message = (f"input is longer than the model's context: {len(ids)} tokens, max_model_len is {context} "
                       f"(embed.truncate_prompt_tokens cuts it instead)")
            self._fail(result, i, CONTEXT_TOO_LONG, message)
            return RowRejected(message)
        return Request(i, ids, 0, sampling=own)
