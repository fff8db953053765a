"""Identical requests answered once: the request key, and a response cache shared across runs.

Two requests are identical when the model (and how it is loaded), the rendered prompt, the
system prompt, the prompt format and every sampling parameter, seed included, are. Only such
requests are deterministic, so only they are shared: with temperature > 0 and no seed each
request is a fresh sample and gets no key.

The cache is a folder (local or s3://) of Parquet files, one per committed unit that added
answers, `entries/<writer>.parquet`, written once and never changed, so writers on many
nodes never conflict. A reader keeps an index of key -> file in memory (about 100 bytes per
cached answer) and reads the new files' keys before each lookup.

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
import io
import json
import threading
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from operators.generate import RESULT_SCHEMA

ENTRIES = "entries"
# An answer as the engine gave it; not how much of its prompt the prefix cache held, which
# depends on what else that engine had seen.
ANSWER_COLUMNS = ("output", "prompt_tokens", "completion_tokens", "finish_reason", "choices", "logprobs",
                  "stop_sequence")
SCHEMA = pa.schema([("key", pa.string())] + [RESULT_SCHEMA.field(c) for c in ANSWER_COLUMNS])


def request_key(model: str, prompt: str, system_prompt: str | None, fmt: str, sampling: dict[str, Any]) -> str | None:
    """A digest of everything that decides the answer; None when the answer is a fresh sample
    (temperature > 0 without a seed) or several (n > 1), which are never shared."""
    if sampling.get("temperature", 0.0) > 0 and sampling.get("seed") is None or sampling.get("n", 1) > 1:
        return None
    body = json.dumps([model, prompt, system_prompt, fmt, sorted(sampling.items())], default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str, storage_options: dict[str, Any] | None = None):
        self.fs, root = url_to_fs(path, **{"use_listings_cache": False, **(storage_options or {})})
        self.root = root.rstrip("/")
        self._index: dict[str, tuple[str, int]] = {}  # key -> (file, row)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        folder = f"{self.root}/{ENTRIES}"
        try:
            files = [f for f in self.fs.find(folder) if f.endswith(".parquet")]
        except FileNotFoundError:
            return
        for f in sorted(set(files) - self._seen):
            with self.fs.open(f, "rb") as fh:
                keys = pq.read_table(fh, columns=["key"]).column(0).to_pylist()
            for row, key in enumerate(keys):
                self._index.setdefault(key, (f, row))
            self._seen.add(f)

    def lookup(self, keys: list[str | None]) -> dict[str, dict[str, Any]]:
        """Cached answers for those keys that have one: key -> {output, prompt_tokens, ...}."""
        with self._lock:
            self._refresh()
            hits = {k: self._index[k] for k in set(keys) if k is not None and k in self._index}
        by_file: dict[str, list[tuple[str, int]]] = {}
        for key, (f, row) in hits.items():
            by_file.setdefault(f, []).append((key, row))
        answers: dict[str, dict[str, Any]] = {}
        for f, wanted in by_file.items():
            with self.fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)  # files written before a column was added lack it: null
                table = pf.read(columns=[c for c in ANSWER_COLUMNS if c in pf.schema_arrow.names])
            for key, row in wanted:
                answers[key] = {c: table.column(c)[row].as_py() if c in table.column_names else None
                                for c in ANSWER_COLUMNS}
        return answers

    def add(self, keys: list[str], answers: dict[str, list[Any]]) -> str | None:
        """Write answers (columns of ANSWER_COLUMNS, aligned with keys; one not given is null)
        as one new file."""
        if not keys:
            return None
        table = pa.table({"key": keys, **{c: answers.get(c, [None] * len(keys)) for c in ANSWER_COLUMNS}},
                         schema=SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        name = f"{self.root}/{ENTRIES}/{uuid.uuid4().hex}.parquet"
        self.fs.makedirs(f"{self.root}/{ENTRIES}", exist_ok=True)
        with self.fs.open(name, "wb") as fh:
            fh.write(buf.getvalue())
        return name
