"""Bad input never ends in a traceback: it is refused by name (exit 2, naming the file and the
column or line, the output untouched) or becomes an error record that says why, and the other
rows go on. One table, each case with what it must give (real engine, tiny random model)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.helpers import spotbatch, write_spec

pytestmark = pytest.mark.engine


def parquet(rows: dict, schema: pa.Schema | None = None):
    def write(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(rows, schema=schema), folder / "part-0.parquet")
        return folder
    return write


def batch_file(*bodies):
    def write(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"custom_id": f"r{i}", "url": "/v1/chat/completions", "body": b})
                 for i, b in enumerate(bodies)]
        (folder / "batch.jsonl").write_text("\n".join(lines) + "\n")
        return folder / "batch.jsonl"
    return write


OK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
BAD_UTF8 = pa.array([b"hello", b"\xff\xfe not text"], pa.binary()).view(pa.string())

# (case, input writer, spec's input section, expected)
# expected: ("refused", words in the message) or ("records", {id: (error_class, words in the error)})
CASES = [
    ("invalid UTF-8 in a prompt", parquet({"id": [1, 2], "text": BAD_UTF8}), {"prompt_column": "text"},
     ("records", {2: ("bad_input", "not valid UTF-8")})),
    ("a template's format spec that does not fit the value",
     parquet({"id": [1, 2], "n": ["three", "4"], "m": [1, 4]}), {"template": "{m:d} of {n}"},
     ("records", {})),
    ("a template's format spec that does not fit the value, the other way",
     parquet({"id": [1, 2], "n": ["three", "4"]}), {"template": "{n:d} items"},
     ("records", {1: ("bad_input", "does not fit this row"), 2: ("bad_input", "does not fit this row")})),
    ("ids of list type", parquet({"id": [[1], [2]], "text": ["a", "b"]}), {"prompt_column": "text"},
     ("refused", ["part-0.parquet", "'id'", "not lists or structs"])),
    ("ids of struct type", parquet({"id": [{"a": 1}, {"a": 2}], "text": ["a", "b"]}), {"prompt_column": "text"},
     ("refused", ["part-0.parquet", "'id'", "not lists or structs"])),
    ("NaN among float ids", parquet({"id": [1.0, float("nan")], "text": ["a", "b"]}), {"prompt_column": "text"},
     ("refused", ["part-0.parquet", "'id'", "NaN"])),
    ("max_tokens over 2**63 in a column", parquet({"id": [1, 2], "text": ["a", "b"], "mt": [4, 2**63 + 1]},
                                                  pa.schema([("id", pa.int64()), ("text", pa.string()),
                                                             ("mt", pa.uint64())])),
     {"prompt_column": "text", "max_tokens_column": "mt"},
     ("records", {2: ("bad_input", "mt must be a positive integer below 2**63")})),
    ("a float max_tokens column", parquet({"id": [1, 2, 3], "text": ["a", "b", "c"], "mt": [4.0, 2.5, None]}),
     {"prompt_column": "text", "max_tokens_column": "mt"},
     ("records", {2: ("bad_input", "mt must be a positive integer below 2**63, got 2.5")})),
    ("an OpenAI line whose body is not an object", batch_file(OK, ["not", "an", "object"]),
     {"kind": "openai_batch"}, ("refused", ["batch.jsonl line 2", "'body' must be a JSON object"])),
    # A request OpenAI would refuse on its own fails on its own, as there: an error record.
    ("an OpenAI max_tokens over 2**63", batch_file(OK, {**OK, "max_tokens": 2**64}),
     {"kind": "openai_batch"}, ("records", {"r1": ("bad_input", "sampling: max_tokens must be <")})),
    ("an OpenAI max_tokens as text", batch_file(OK, {**OK, "max_tokens": "4"}),
     {"kind": "openai_batch"}, ("records", {"r1": ("bad_input", "max_tokens: Input should be a valid integer")})),
    ("an OpenAI temperature out of range", batch_file(OK, {**OK, "temperature": 7}),
     {"kind": "openai_batch"}, ("records", {"r1": ("bad_input", "temperature must be <= 2, got 7")})),
    ("an OpenAI line with empty tools", batch_file(OK, {**OK, "tools": []}),
     {"kind": "openai_batch"}, ("refused", ["batch.jsonl line 2", "body.tools must be a non-empty list"])),
]


@pytest.mark.parametrize("case, make_input, input_spec, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_by_name_or_becomes_an_error_record(tmp_path, ray_cluster, tiny_model,
                                                                 case, make_input, input_spec, expected):
    path = make_input(tmp_path / "in")
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(path), **input_spec},
        "model": {"name": "tiny-random", "max_model_len": 256, "enforce_eager": True},
        "sampling": {"max_tokens": 4},
        "output": {"path": str(tmp_path / "out")},
    })
    proc = spotbatch("run", str(spec), "--address", ray_cluster)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    kind, what = expected
    if kind == "refused":
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert all(words in proc.stderr for words in what), proc.stderr[-2000:]
        assert not (tmp_path / "out").exists()
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    if input_spec.get("kind") == "openai_batch":
        rows = {r["custom_id"]: r for r in ds.dataset(str(tmp_path / "out")).to_table().to_pylist()}
        assert len(rows) == len(path.read_text().splitlines())  # every request, once
    else:
        rows = {r["id"]: r for r in ds.dataset(str(tmp_path / "out")).to_table().to_pylist()}
        assert len(rows) == pq.read_metadata(path / "part-0.parquet").num_rows  # every row, once
    for row_id, row in rows.items():
        if row_id in what:
            error_class, words = what[row_id]
            assert row["error_class"] == error_class and words in row["error"], row
        else:
            assert row["error"] is None and row["completion_tokens"] > 0, row


def test_retry_failed_keeps_binary_ids(tmp_path, ray_cluster, tiny_model):
    """Binary ids (a NUL, bytes that are not UTF-8), the hardest, through the CLI and a real engine;
    tests/test_retry_ids.py takes every id type through the same steps without one."""
    ids = pa.array([b"\x00a", b"\x00b", b"\xffc"], pa.binary())
    pq.write_table(pa.table({"id": ids, "text": ["a", "b", "c"]}), (tmp_path / "in.parquet"))
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in.parquet"), "prompt_column": "text"},
        "model": {"name": "tiny-random", "max_model_len": 256, "enforce_eager": True},
        "sampling": {"max_tokens": 4},
        # Every request times out: all three rows are error records to retry.
        "compute": {"request_timeout_seconds": 0.0001},
        "cache": {"dedup": False},
        "output": {"path": str(tmp_path / "out")},
    })
    first = spotbatch("run", str(spec), "--address", ray_cluster)
    assert first.returncode == 0, first.stderr[-3000:]
    retry = spotbatch("run", "--retry-failed", str(tmp_path / "out"), "--address", ray_cluster,
                      "--set", "compute.request_timeout_seconds=600")
    assert retry.returncode == 0 and "Traceback" not in retry.stderr, retry.stdout + retry.stderr[-3000:]
    table = ds.dataset(str(tmp_path / "out")).to_table()
    assert table.column("id").type == ids.type
    assert sorted(table.column("id").to_pylist()) == sorted(ids.to_pylist())  # each once, exactly as given
    assert table.column("error").null_count == 3
