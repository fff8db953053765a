"""A served batch's `usage` as OpenAI's Batch object gives it: input tokens with those the prefix
cache held (`input_tokens_details.cached_tokens`), output tokens with the reasoning a parser kept
apart (`output_tokens_details.reasoning_tokens`), summed from the committed units' footers, the
same counts `spotbatch status` reads. Both were written as 0 whatever the run did."""

from __future__ import annotations

import json
import time

import pyarrow as pa
from openai.types import Batch

from operators.generate import RESULT_SCHEMA, empty_results
from pipelines.planning.plan_run import plan_run
from pipelines.spec import PipelineSpec
from pipelines.store.counts import UnitCounts
from pipelines.store.status import format_status, run_status
from pipelines.stream.unit_rows import read_unit_rows
from server.finish import figures_of


def committed(tmp_path) -> str:
    """A three-request batch's output, each unit committed as if the engine had answered with 3
    prompt tokens of which 2 from its prefix cache, and 4 output tokens of which 1 of thinking."""
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({
        "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}}) + "\n" for i in range(3)))
    spec = PipelineSpec(input={"kind": "openai_batch", "paths": str(batch)}, model={"name": "tiny-random"},
                        compute={"tokens_per_unit": 1}, output={"path": str(tmp_path / "out")})
    _, store, plan = plan_run(spec)
    for unit in plan.units:
        ids = read_unit_rows(unit.path, unit.start, unit.stop, ["custom_id"], {}).column("custom_id")
        n = len(ids)
        cols = {**empty_results([None] * n), "output": ["X"] * n, "prompt_tokens": [3] * n,
                "cached_prompt_tokens": [2] * n, "completion_tokens": [4] * n, "reasoning_tokens": [1] * n,
                "finish_reason": ["stop"] * n, "served_from": ["engine"] * n}
        table = pa.table({"custom_id": ids, **{f.name: pa.array(cols[f.name], f.type) for f in RESULT_SCHEMA},
                          "model": ["m"] * n, "spec_fingerprint": [plan.fingerprint] * n})
        store.commit(unit.unit_id, table, UnitCounts.of_results(cols, 0.0).to_json())
    return str(tmp_path / "out")


def test_a_batchs_usage_counts_cached_prompt_and_reasoning_tokens(tmp_path):
    status = run_status(committed(tmp_path))
    usage, _ = figures_of(status, _summary())
    batch = Batch.model_validate({"id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions",
                                  "input_file_id": "file-1", "completion_window": "24h", "status": "completed",
                                  "created_at": 0, "usage": usage})
    assert (batch.usage.input_tokens, batch.usage.input_tokens_details.cached_tokens) == (9, 6)
    assert (batch.usage.output_tokens, batch.usage.output_tokens_details.reasoning_tokens) == (12, 3)
    assert batch.usage.total_tokens == 21
    assert "(3 of them reasoning)" in format_status(status)


def test_a_footer_keeps_the_keys_it_always_had_when_nothing_was_cached():
    counts = UnitCounts(rows=1, prompt_tokens=3, completion_tokens=1).to_json()
    assert "cached_prompt_tokens" not in counts and "reasoning_tokens" not in counts
    assert UnitCounts.from_json(counts).cached_prompt_tokens == 0


def _summary():
    from types import SimpleNamespace

    return SimpleNamespace(total_usd=0.0, usd_per_1m_output_tokens=None, usd_per_1m_input_tokens=None,
                           breakdown_usd={})


def test_a_polls_request_counts_read_each_committed_unit_once(tmp_path, monkeypatch):
    """A poll read every committed unit of the run again: a 50,000-request batch polled every few
    seconds read its whole output each time. Now only the units committed since the last poll."""
    from pipelines.store.output import OutputStore
    from server.live_counts import request_counts
    from server.state import State

    state = State(str(tmp_path / "store"))
    run = tmp_path / "store" / "runs" / "tenant" / "batch_1"
    run.parent.mkdir(parents=True)
    committed(tmp_path)
    (tmp_path / "out").rename(run)
    reads = []
    read_unit = OutputStore.read_unit
    monkeypatch.setattr(OutputStore, "read_unit", lambda self, u, c=None: reads.append(u) or read_unit(self, u, c))
    batch = {"id": "batch_1", "endpoint": "/v1/chat/completions", "request_counts": {"total": 3}}
    assert request_counts(state, "tenant", batch) == {"total": 3, "completed": 3, "failed": 0}
    assert len(reads) == 3
    assert request_counts(state, "tenant", batch) == {"total": 3, "completed": 3, "failed": 0}
    assert len(reads) == 3  # the second poll read no unit again


def test_a_units_tally_keeps_only_the_requests_split_between_units():
    """A unit's tally is kept for every poll of its batch: a request of several prompts whose rows
    are all in the unit is counted there, not kept as a split request (an embeddings batch of
    50,000 list inputs held 50,000 of them per batch, each summed again on every poll)."""
    from pipelines.formats.lines import row_ids
    from server.live_counts import summed, tally

    whole_ok, whole_bad, split = row_ids("a", 3, "f"), row_ids("b", 2, "f"), row_ids("c", 4, "f")
    first = tally([*whole_ok, *whole_bad, "d", *split[:1]], [None] * 3 + [None, "boom"] + [None, None], True)
    assert (first.completed, first.failed, first.partial) == (2, 1, {"c": (1, 0, 4)})
    second = tally(split[1:], [None, "boom", None], True)
    assert summed([first]) == {"completed": 2, "failed": 1}  # c: one row of four so far
    assert summed([first, second]) == {"completed": 2, "failed": 2}  # c whole, one of its rows an error


def test_polls_in_a_loop_read_a_running_batchs_figures_once_every_few_seconds(tmp_path, monkeypatch):
    """Each poll of a running batch read its run's status and ledger (every footer, every record)."""
    import server.finish
    from server.live_counts import FIGURES_SECONDS, RecentFigures
    from server.state import State

    reads = []
    monkeypatch.setattr(server.finish, "run_figures", lambda state, tenant, batch: reads.append(batch) or ({}, {}))
    figures, state = RecentFigures(), State(str(tmp_path / "store"))
    for _ in range(5):
        figures.get(state, "tenant", "batch_1")
    assert reads == ["batch_1"]
    figures.get(state, "tenant", "batch_2")
    assert reads == ["batch_1", "batch_2"]  # another batch's are its own
    later = time.monotonic() + FIGURES_SECONDS + 1
    monkeypatch.setattr("time.monotonic", lambda: later)
    figures.get(state, "tenant", "batch_1")
    assert reads == ["batch_1", "batch_2", "batch_1"]  # read again once they are older than FIGURES_SECONDS


def test_a_poll_during_a_slow_read_gets_the_last_figures_and_no_second_read(tmp_path, monkeypatch):
    """A read of a large run's figures may take longer than FIGURES_SECONDS: polls meanwhile got a
    read each, and the entry was stale as soon as it was stored."""
    import threading

    import server.finish
    from server.live_counts import FIGURES_SECONDS, RecentFigures
    from server.state import State

    figures, state = RecentFigures(), State(str(tmp_path / "store"))
    reads, release = [], threading.Event()

    def slow(state, tenant, batch):
        reads.append(batch)
        if len(reads) > 1:
            release.wait(10)
        return {"n": len(reads)}, {}
    monkeypatch.setattr(server.finish, "run_figures", slow)
    assert figures.get(state, "t", "b")[0] == {"n": 1}
    later = time.monotonic() + FIGURES_SECONDS + 1
    monkeypatch.setattr("time.monotonic", lambda: later)
    reader = threading.Thread(target=figures.get, args=(state, "t", "b"))
    reader.start()
    while len(reads) < 2:
        time.sleep(0.01)
    assert figures.get(state, "t", "b")[0] == {"n": 1} and len(reads) == 2  # the last figures, no third read
    release.set()
    reader.join(10)
    assert figures.get(state, "t", "b")[0] == {"n": 2} and len(reads) == 2  # the new ones, fresh from the end
