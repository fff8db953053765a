"""What the response cache stores: the request key that says two requests are identical, and the
answers' columns.

Two requests are identical when the model (and how it is loaded), the rendered prompt, the
system prompt, the prompt format and every sampling parameter, seed included, are. Only such
requests are deterministic, so only they are shared: with temperature > 0 and no seed each
request is a fresh sample and gets no key.

>>> a = request_key("m", "Hi", None, "chat", {"max_tokens": 8, "temperature": 0.0, "seed": None})
>>> a == request_key("m", "Hi", None, "chat", {"max_tokens": 8, "temperature": 0.0, "seed": None})
True
>>> a == request_key("m", "Hi", None, "chat", {"max_tokens": 9, "temperature": 0.0, "seed": None})
False
>>> request_key("m", "Hi", None, "chat", {"max_tokens": 8, "temperature": 0.7, "seed": None}) is None
True
>>> request_key("m", "Hi", None, "chat", {"max_tokens": 8, "temperature": 0.0, "seed": 0, "n": 3}) is None
True
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from operators.generate import RESULT_SCHEMA, conform

# An answer as the engine gave it; not how much of its prompt the prefix cache held, which
# depends on what else that engine had seen.
ANSWER_COLUMNS = ("output", "prompt_tokens", "completion_tokens", "finish_reason", "choices", "logprobs",
                  "stop_sequence", "tool_calls", "reasoning", "reasoning_tokens", "embedding")
# `embedding`: an embedding run's vector (operators/embed.py), of any size here.
SCHEMA = pa.schema([("key", pa.string())] + [RESULT_SCHEMA.field(c) for c in ANSWER_COLUMNS if c != "embedding"]
                   + [pa.field("embedding", pa.list_(pa.float32()))])


def request_key(model: str, prompt: str, system_prompt: str | None, fmt: str, sampling: dict[str, Any]) -> str | None:
    """A digest of everything that decides the answer; None when the answer is a fresh sample
    (temperature > 0 without a seed) or several (n > 1), which are never shared."""
    if sampling.get("temperature", 0.0) > 0 and sampling.get("seed") is None or sampling.get("n", 1) > 1:
        return None
    body = json.dumps([model, prompt, system_prompt, fmt, sorted(sampling.items())], default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def answer_table(keys: list[str], answers: dict[str, list[Any]]) -> pa.Table:
    """Keys and their answers (columns of ANSWER_COLUMNS; one not given is null) in SCHEMA."""
    return pa.table({"key": keys, **{c: answers.get(c, [None] * len(keys)) for c in ANSWER_COLUMNS}}, schema=SCHEMA)


def conform_answers(table: pa.Table) -> pa.Table:
    """A cache file in SCHEMA: one written before a column was added has it as nulls."""
    return conform(table, SCHEMA).cast(SCHEMA)
