"""`--retry-failed` finds a unit's failed rows by their ids, sends them to the read stage as Arrow
IPC bytes, and the read stage keeps only those rows: each id type must come back equal to itself
on the way. No engine: the failed rows are committed by hand (tests/test_bad_input.py runs the
binary ids, the hardest, through a real engine and the CLI)."""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from operators.generate import RESULT_SCHEMA, empty_results
from pipelines.retry import failed_rows
from pipelines.run import prepare
from pipelines.spec import PipelineSpec
from pipelines.stream.unit_rows import pack_ids, unpack_ids

IDS = {
    "timestamp": pa.array([datetime.datetime(2026, 1, d) for d in (1, 2, 3, 4)], pa.timestamp("us")),
    "decimal": pa.array([decimal.Decimal(v) for v in ("1.10", "2.20", "3.30", "4.40")], pa.decimal128(5, 2)),
    "binary": pa.array([b"\x00a", b"\x00b", b"\xffc", b"d"], pa.binary()),
    "string": pa.array(["a", "b", "é", "\x00"], pa.string()),
}


def commit_with_errors(store, plan, ids: pa.Array, failed: list[bool]) -> None:
    """One unit's results with the rows of `failed` as timeout error records."""
    (unit,) = plan.units
    n = len(ids)
    cols = {**empty_results([None] * n), "output": [None if f else "a" for f in failed],
            "error": ["timed out" if f else None for f in failed],
            "error_class": ["timeout" if f else None for f in failed], "served_from": ["engine"] * n}
    table = pa.table({"id": ids, **{f.name: pa.array(cols[f.name], f.type) for f in RESULT_SCHEMA},
                      "model": ["m"] * n, "spec_fingerprint": [plan.fingerprint] * n})
    store.commit(unit.unit_id, table, {"rows": n, "errors": sum(failed)})


@pytest.mark.parametrize("kind", list(IDS))
def test_the_failed_rows_of_every_id_type_are_found_and_read_again_exactly(tmp_path, tiny_model, kind):
    ids = IDS[kind]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ids, "text": ["w", "x", "y", "z"]}), tmp_path / "in" / "part-0.parquet")
    spec = PipelineSpec.model_validate({
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": str(tiny_model), "max_model_len": 256}, "output": {"path": str(tmp_path / "out")}})
    store, plan = prepare(spec)
    failed = [True, False, True, False]
    commit_with_errors(store, plan, ids, failed)

    (found,) = failed_rows(store, plan).values()
    assert found.type == ids.type and found.to_pylist() == [ids[0].as_py(), ids[2].as_py()]
    only = unpack_ids(pack_ids(found))  # what the read stage is given
    assert only.equals(found)
    table = pq.read_table(tmp_path / "in")
    again = table.filter(pc.is_in(table.column("id"), value_set=only))
    assert again.column("text").to_pylist() == ["w", "y"]
    assert failed_rows(store, plan, classes=["engine_error"]) == {}  # another class: nothing to retry
