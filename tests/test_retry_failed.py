"""`spotbatch run --retry-failed OUTPUT`: only error records run again, merged into their units
(real vLLM engine, tiny random model)."""

import collections

import pyarrow.dataset as ds
import pytest

from pipelines.run import run
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.conftest import write_shards
from tests.helpers import spotbatch

pytestmark = pytest.mark.engine


def test_failed_rows_run_again_and_merge_while_the_rest_stay(tmp_path, ray_cluster, tiny_model):
    rows = [{"id": i, "text": f"item {i} " + "word " * (i % 5)} for i in range(24)] + [{"id": 99, "text": None}]
    write_shards(tmp_path / "in", rows, shards=2)
    out = tmp_path / "out"
    spec = PipelineSpec(
        input={"paths": str(tmp_path / "in"), "prompt_column": "text", "format": "raw"},
        model={"name": str(tiny_model), "enforce_eager": True, "max_model_len": 256},
        sampling={"max_tokens": 40, "temperature": 0.0},
        # A timeout no request can meet: every row times out (class timeout).
        compute={"tokens_per_unit": 100, "request_timeout_seconds": 0.0001},
        cache={"dedup": False},
        output={"path": str(out)},
    )
    first = run(spec, address=ray_cluster)
    assert first.finished and first.errors_by_class["bad_input"] == 1
    timed_out = first.errors_by_class.get("timeout", 0)
    assert timed_out >= 20, first.errors_by_class
    before = {r["id"]: r for r in ds.dataset(str(out)).to_table().to_pylist()}
    parts = {p.name: p.read_bytes() for p in out.glob("part-*.parquet")}
    actors = len(Records(OutputStore(str(out))).actors())

    # What the output already cost counts against a budget: this one is spent before it starts.
    broke = spotbatch("run", "--retry-failed", str(out), "--only-class", "timeout", "--address", ray_cluster,
                      "--set", "compute.request_timeout_seconds=600", "--set", "cost.max_cost_usd=0.000000001")
    assert broke.returncode == 3, broke.stdout[-2000:] + broke.stderr[-2000:]
    assert "stopped: budget" in broke.stdout
    assert {p.name: p.read_bytes() for p in out.glob("part-*.parquet")} == parts  # nothing touched
    assert len(Records(OutputStore(str(out))).actors()) == actors  # no engine started

    # Only timeouts, with a timeout that can be met; the null prompt is left as it is.
    proc = spotbatch("run", "--retry-failed", str(out), "--only-class", "timeout", "--address", ray_cluster,
                     "--set", "compute.request_timeout_seconds=600")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{timed_out} completed, 0 failed" in proc.stdout
    after = ds.dataset(str(out)).to_table().to_pylist()
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in rows)  # each row once
    classes = collections.Counter(r["error_class"] for r in after)
    assert classes == {None: 24, "bad_input": 1}
    by_id = {r["id"]: r for r in after}
    assert by_id[99] == before[99]  # a row of a class not asked for stays exactly as it was
    assert all(by_id[i]["completion_tokens"] > 0 for i in range(24))
    # (rows that had answers stay as they were: tests/test_unit_protocol.py, with the merge alone)
    assert len(list((out / "_spotbatch" / "replaced").iterdir())) >= 1  # the earlier versions are kept
    status = spotbatch("status", str(out), "--json")
    assert '"rows_failed": 1' in status.stdout
