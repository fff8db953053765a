"""Identical requests are generated once in a run, and a shared response cache answers them in
later runs (real vLLM engine, tiny random model: greedy, so answers repeat exactly)."""

import collections

import pyarrow.dataset as ds
import pytest

from pipelines.run import run
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.conftest import write_shards

pytestmark = pytest.mark.engine


def rows_with_duplicates():
    """100 rows, 30 of them repeating an earlier prompt (the same max_tokens too)."""
    unique = [{"id": i, "text": f"record {i}: " + "alpha beta " * (i % 7), "max_tokens": 6} for i in range(70)]
    dups = [{**unique[(i * 7) % 70], "id": 1000 + i} for i in range(30)]
    # Same text but a different max_tokens is a different request: not merged.
    other = [{**unique[0], "id": 2000, "max_tokens": 5}]
    return unique + dups + other


def spec_for(tmp, model, out, cache):
    return PipelineSpec(
        input={"paths": str(tmp / "in"), "prompt_column": "text", "max_tokens_column": "max_tokens", "format": "raw"},
        model={"name": str(model), "enforce_eager": True, "max_model_len": 256},
        sampling={"max_tokens": 8, "temperature": 0.0},
        # One actor taking one unit at a time: units commit in a known order, so which row was
        # answered by the engine, by a duplicate or by the cache can be told from the records.
        compute={"tokens_per_unit": 300, "actors": 1, "units_in_flight": 1},
        cache={"path": str(cache)},
        output={"path": str(tmp / out)},
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, ray_cluster, tiny_model):
    tmp = tmp_path_factory.mktemp("dedup")
    rows = rows_with_duplicates()
    write_shards(tmp / "in", rows, shards=3)
    first = run(spec_for(tmp, tiny_model, "out1", tmp / "cache"), address=ray_cluster)
    second = run(spec_for(tmp, tiny_model, "out2", tmp / "cache"), address=ray_cluster)
    tables = [ds.dataset(str(tmp / o)).to_table().to_pylist() for o in ("out1", "out2")]
    return rows, first, second, tables, tmp


def rows_by_unit_in_commit_order(out) -> list[list[dict]]:
    store = OutputStore(str(out))
    ended = {u: min(a["end"]["time"] for a in tries.values() if a.get("end", {}).get("outcome") == "committed")
             for u, tries in Records(store).attempts().items()}
    return [store.read_unit(u).to_pylist() for u in sorted(store.committed_units(), key=ended.get)]


def test_each_repeat_is_answered_by_a_duplicate_in_its_unit_or_by_the_cache_after(two_runs):
    """The first unit (in commit order) holding a request generates it once and answers its
    repeats in that unit as duplicates; every later unit holding it is answered by the cache."""
    rows, *_, tmp = two_runs
    src = {r["id"]: (r["text"], r["max_tokens"]) for r in rows}
    seen: set = set()
    expected, got = [], []
    for unit in rows_by_unit_in_commit_order(tmp / "out1"):
        first_here: set = set()
        for r in unit:
            request = src[r["id"]]
            if request in seen:
                expected.append("cache")
            elif request in first_here:
                expected.append("duplicate")
            else:
                expected.append("engine")
                first_here.add(request)
            got.append(r["served_from"])
        seen |= first_here
    assert got == expected
    assert collections.Counter(got)["engine"] == 71


def test_duplicates_in_a_run_cost_no_engine_tokens(two_runs):
    rows, first, _, (results, _), _ = two_runs
    served = collections.Counter(r["served_from"] for r in results)
    assert served["engine"] == 71 and served["duplicate"] + served["cache"] == 30
    engine_rows = [r for r in results if r["served_from"] == "engine"]
    assert first.completion_tokens == sum(r["completion_tokens"] for r in engine_rows)
    assert first.reused_rows == 30
    assert first.cost.output_tokens == first.completion_tokens  # the ledger prices engine tokens only
    by_id = {r["id"]: r for r in results}
    src = {r["id"]: r for r in rows}
    for r in results:
        if r["id"] >= 1000 and r["id"] < 2000:
            original = next(o for o in rows if o["text"] == src[r["id"]]["text"] and o["id"] < 1000)
            assert r["output"] == by_id[original["id"]]["output"]
            assert r["completion_tokens"] == by_id[original["id"]]["completion_tokens"]


def test_a_later_run_is_answered_from_the_shared_cache(two_runs):
    rows, first, second, (results1, results2), _ = two_runs
    assert second.finished and second.completion_tokens == 0 and second.prompt_tokens == 0
    assert second.reused_rows == len(rows)
    assert {r["served_from"] for r in results2} == {"cache"}
    assert {r["id"]: r["output"] for r in results2} == {r["id"]: r["output"] for r in results1}
    assert second.cost.output_tokens == 0
