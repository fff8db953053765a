"""The unit protocol without Ray or an engine: a fake generate function, a real output folder
(local, and the loopback S3), and a fault injected at every step."""

from __future__ import annotations

import threading
import time
import uuid

import pyarrow as pa
import pytest

from operators.failures import BAD_INPUT, ENGINE_ERROR, PREEMPTED_EXHAUSTED, TIMEOUT
from operators.generate import RESULT_COLUMNS
from pipelines.cache.response_cache import ResponseCache
from pipelines.spec import PipelineSpec
from pipelines.store.counts import UnitCounts, counts_of
from pipelines.store.output import OutputStore
from pipelines.store.records import HEARTBEAT_SECONDS, Records
from pipelines.stream.other_runs import OtherRunsWait, await_other_runs
from pipelines.stream.unit_rows import ERROR, ID, MAX_TOKENS, PROMPT
from pipelines.unit import protocol as unit_protocol
from pipelines.unit.protocol import (
    SKIP_COMMITTED,
    SKIP_HELD,
    STORAGE_ERROR,
    SUPERSEDED,
    Skip,
    UnitContext,
    UnitProtocol,
)

UNIT = "00000-unit"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request, tmp_path) -> tuple[str, dict]:
    """(output path, storage options) of an output planned under fingerprint "fp": a local
    folder, or a fresh prefix on the loopback S3."""
    if request.param == "local":
        where = str(tmp_path / "out"), {}
    else:
        where = f"s3://spotbatch/{uuid.uuid4().hex[:8]}/out", request.getfixturevalue("s3_server")
    OutputStore(*where).create_manifest({"fingerprint": "fp"})
    return where


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(unit_protocol, "STORAGE_BACKOFF_SECONDS", 0.0)


def make_spec(where, **compute) -> PipelineSpec:
    path, options = where
    return PipelineSpec(input={"paths": "in", "prompt_column": "text"}, model={"name": "tiny-random"},
                        compute=compute, output={"path": path, "storage_options": options})


def unit_rows(n: int = 4, bad: tuple[int, ...] = ()) -> pa.Table:
    """A unit's rows as the read stage hands them over; rows in `bad` already failed to render."""
    return pa.table({
        ID: pa.array(range(n), pa.int64()),
        PROMPT: [None if i in bad else f"prompt {i}" for i in range(n)],
        ERROR: [f"row {i} has no text" if i in bad else None for i in range(n)],
        MAX_TOKENS: pa.array([None] * n, pa.int64()),
    })


class FakeGenerate:
    """Answers each prompt with its upper case; `fail` (a row -> class) makes rows error records,
    `raises` makes the whole call fail, `during` runs inside the call (another actor, say)."""

    def __init__(self, fail: dict[int, str] | None = None, raises: BaseException | None = None, during=None):
        self.calls: list[list] = []
        self.fail, self.raises, self.during = fail or {}, raises, during

    def __call__(self, batch, cached=None):
        prompts, errors, keys, samplings = batch.prompts, batch.errors, batch.keys, batch.samplings
        self.calls.append(list(prompts))
        self.samplings = samplings
        if self.during:
            self.during()
        if self.raises:
            raise self.raises
        cols = {c: [] for c in RESULT_COLUMNS}
        for i, (prompt, error) in enumerate(zip(prompts, errors)):
            key = keys[i] if keys else None
            if error is not None or i in self.fail:
                answer = {"error": error or "failed", "error_class": BAD_INPUT if error else self.fail[i]}
            elif cached and key in cached:
                answer = {**cached[key], "served_from": "cache"}
            else:
                answer = {"output": prompt.upper(), "prompt_tokens": 2, "completion_tokens": 3,
                          "finish_reason": "stop", "served_from": "engine"}
            for c in cols:
                cols[c].append(answer.get(c, 0 if "tokens" in c else None))
        return cols


def protocol(spec, generate, run_id="run-a", actor_id="actor-a", store=None, retry=False, model_key=None,
             **kw) -> UnitProtocol:
    context = UnitContext(spec, fingerprint="fp", run_id=run_id, actor_id=actor_id, node_id="node-1", retry=retry,
                          model_key=model_key)
    return UnitProtocol(context, generate, store=store, **kw)


def outcomes(store: OutputStore, unit_id: str = UNIT) -> list[str | None]:
    """Each attempt's outcome in order; None for an attempt with no end."""
    tries = Records(store).unit_attempts(unit_id)
    return [tries[a].get("end", {}).get("outcome") for a in sorted(tries)]


def beat(store: OutputStore, actor_id: str, age: float) -> None:
    Records(store).actor_beat(actor_id, {"time": time.time() - age})


def open_attempt(store: OutputStore, run_id: str, actor_id: str, unit_id: str = UNIT) -> str:
    records = Records(store)
    return records.claim_attempt(unit_id, records.unit_attempts(unit_id), {"run_id": run_id, "actor_id": actor_id,
                                                                           "time": time.time()})


def test_a_unit_is_generated_committed_and_recorded_once(where):
    spec = make_spec(where)
    generate = FakeGenerate()
    p = protocol(spec, generate)
    done = p.run(UNIT, unit_rows(4, bad=(2,)))
    assert done.committed and done.rows == 4 and done.errors == 1 and done.errors_by_class == {BAD_INPUT: 1}
    assert (done.prompt_tokens, done.completion_tokens) == (6, 9)
    table = p.store.read_unit(UNIT)
    assert table.column("id").to_pylist() == [0, 1, 2, 3]
    assert table.column("output").to_pylist() == ["PROMPT 0", "PROMPT 1", None, "PROMPT 3"]
    assert UnitCounts.from_json(p.store.unit_stats(UNIT)) == counts_of(done)  # the footer
    assert outcomes(p.store) == ["committed"]

    again = p.run(UNIT, unit_rows(4, bad=(2,)))  # Ray re-sends it, or a resumed run reaches it
    assert again.skipped == SKIP_COMMITTED and not again.committed
    assert len(generate.calls) == 1 and outcomes(p.store) == ["committed"]


def test_an_attempt_killed_between_its_commit_and_its_end_record_is_known_by_the_footer(where, monkeypatch):
    from pipelines.store.ledger import compute_ledger

    p = protocol(make_spec(where), FakeGenerate())
    with monkeypatch.context() as m:
        m.setattr(Records, "end_attempt", lambda *a, **k: None)  # the node died right after the commit
        assert p.run(UNIT, unit_rows(4)).committed
    assert outcomes(p.store) == [None]  # the records alone read it as lost with its node
    end = Records(p.store).settled_attempts()[UNIT]["000000"]["end"]
    assert end["outcome"] == "committed" and (end["prompt_tokens"], end["completion_tokens"]) == (8, 12)
    summary = compute_ledger(p.store).summary  # its tokens count, and its time is useful, not wasted
    assert (summary.input_tokens, summary.output_tokens) == (8, 12)


def test_a_second_committer_is_refused_and_its_result_never_lands(where):
    """Run B's actor generates while run A, which cannot see B alive (no beat: B's node is
    thought dead), generates and commits the same unit: B's commit is refused by the storage."""
    spec = make_spec(where)
    a = protocol(spec, FakeGenerate(), run_id="run-a", actor_id="actor-a")
    b_generate = FakeGenerate(during=lambda: a.run(UNIT, unit_rows()))
    b = protocol(spec, b_generate, run_id="run-b", actor_id="actor-b")
    late = b.run(UNIT, unit_rows())
    assert not late.committed and late.skipped is None  # it generated, and lost the commit
    assert outcomes(b.store) == ["already committed", "committed"]  # B's attempt 0, A's attempt 1
    assert b.store.read_unit(UNIT).num_rows == 4 and b.store.committed_units() == {UNIT}


def test_a_unit_held_by_a_live_actor_of_another_run_is_left_to_it_until_that_actor_dies(where):
    spec = make_spec(where)
    store = OutputStore(*where)
    open_attempt(store, "run-a", "actor-a")
    beat(store, "actor-a", age=1)
    generate = FakeGenerate()
    b = protocol(spec, generate, run_id="run-b", actor_id="actor-b")
    assert b.run(UNIT, unit_rows()).skipped == SKIP_HELD and not generate.calls

    beat(store, "actor-a", age=3 * HEARTBEAT_SECONDS)  # actor A stopped beating: its node is gone
    assert b.run(UNIT, unit_rows()).committed
    assert outcomes(store) == [None, "committed"]


def test_a_beat_dated_in_the_future_does_not_hold_a_unit(where):
    store = OutputStore(*where)
    open_attempt(store, "run-a", "actor-a")
    beat(store, "actor-a", age=-3600)  # a clock an hour ahead
    assert protocol(make_spec(where), FakeGenerate(), run_id="run-b").run(UNIT, unit_rows()).committed


def test_our_own_runs_open_attempt_is_taken_over_at_once(where):
    """Ray gives a unit of our run to another actor only when the one that had it was lost."""
    store = OutputStore(*where)
    open_attempt(store, "run-a", "actor-lost")
    beat(store, "actor-lost", age=0)  # its last beat is fresh: it died a moment ago
    assert protocol(make_spec(where), FakeGenerate(), run_id="run-a").run(UNIT, unit_rows()).committed


def test_of_two_actors_that_looked_at_once_one_claims_the_unit_and_the_other_leaves_it(where):
    spec = make_spec(where)
    store = OutputStore(*where)
    generate = FakeGenerate()
    b = protocol(spec, generate, run_id="run-b", actor_id="actor-b")
    look = b.records.unit_attempts

    def look_then_lose_the_race(unit_id):
        seen = look(unit_id)
        open_attempt(store, "run-a", "actor-a")  # run A claims between B's look and B's claim
        beat(store, "actor-a", age=0)
        return seen

    b.records.unit_attempts = look_then_lose_the_race
    assert b.run(UNIT, unit_rows()).skipped == SKIP_HELD
    assert not generate.calls and outcomes(store) == [None]  # only A's claim


def test_a_failing_commit_fails_the_attempt_and_the_unit_is_tried_again_in_place(where):
    class FlakyStore(OutputStore):
        fails = 1

        def commit(self, *args, **kw):
            if self.fails:
                self.fails -= 1
                raise OSError("503 Slow Down")
            return super().commit(*args, **kw)

    store = FlakyStore(*where)
    generate = FakeGenerate()
    done = protocol(make_spec(where), generate, store=store).run(UNIT, unit_rows())
    assert done.committed and len(generate.calls) == 2
    assert outcomes(store) == ["failed", "committed"] and store.read_unit(UNIT).num_rows == 4
    first = Records(store).unit_attempts(UNIT)["000000"]["end"]
    assert first["error_class"] == STORAGE_ERROR and "Slow Down" in first["error"] and "committing" in first["error"]


def test_a_storage_fault_that_persists_leaves_the_unit_pending_and_counts_against_no_one(where):
    class DiskFull(OutputStore):
        def commit(self, *args, **kw):
            raise OSError(28, "No space left on device")

    store = DiskFull(*where)
    spec = make_spec(where, max_attempts=2)
    left = protocol(spec, FakeGenerate(), store=store).run(UNIT, unit_rows())
    assert not left.committed and left.skipped.startswith(STORAGE_ERROR) and "No space left" in left.skipped
    assert outcomes(store) == ["failed"] * unit_protocol.STORAGE_TRIES and store.committed_units() == set()
    # more failed attempts than max_attempts, none the unit's fault: it is generated, not failed
    done = protocol(spec, FakeGenerate(), run_id="run-b").run(UNIT, unit_rows())
    assert done.committed and done.errors == 0


def test_a_failing_start_record_generates_nothing(where):
    class NoCreate(OutputStore):
        def create(self, name, data):
            raise OSError("disk full")

    generate = FakeGenerate()
    left = protocol(make_spec(where), generate, store=NoCreate(*where)).run(UNIT, unit_rows())
    assert left.skipped.startswith(STORAGE_ERROR) and "claiming" in left.skipped and "disk full" in left.skipped
    assert not generate.calls and OutputStore(*where).committed_units() == set()


def test_a_failing_end_record_after_the_commit_keeps_the_commit(where, cli_console, capsys):
    class NoEnd(OutputStore):
        def create(self, name, data):
            if name.endswith(".end.json"):
                raise OSError("disk full")
            return super().create(name, data)

    store = NoEnd(*where)
    assert protocol(make_spec(where), FakeGenerate(), store=store).run(UNIT, unit_rows()).committed
    assert store.committed_units() == {UNIT} and outcomes(store) == [None]  # reads as lost: counted, never redone
    assert "could not record the end" in capsys.readouterr().err
    assert protocol(make_spec(where), FakeGenerate(), run_id="run-b").run(UNIT, unit_rows()).skipped == SKIP_COMMITTED


def test_a_run_moved_aside_while_generating_commits_nothing(where):
    store = OutputStore(*where)
    generate = FakeGenerate(during=lambda: store.put("_spotbatch/fingerprint", b"the-new-run"))
    late = protocol(make_spec(where), generate, store=store).run(UNIT, unit_rows())
    assert late.skipped == SUPERSEDED and not late.committed and late.completion_tokens == 12  # wasted, not lost
    assert store.committed_units() == set() and outcomes(store) == [SUPERSEDED]


def test_a_commit_that_lands_just_after_its_run_was_moved_aside_is_taken_back_out(where):
    class MovedAsideMidCommit(OutputStore):
        def commit(self, *args, **kw):
            landed = super().commit(*args, **kw)
            self.put("_spotbatch/fingerprint", b"the-new-run")  # --new-run's move, just after
            return landed

    store = MovedAsideMidCommit(*where)
    late = protocol(make_spec(where), FakeGenerate(), store=store).run(UNIT, unit_rows())
    assert late.skipped == SUPERSEDED and store.committed_units() == set()
    assert store.find("_spotbatch/superseded/fp-late") == [f"_spotbatch/superseded/fp-late/part-{UNIT}.parquet"]


def test_two_merges_racing_on_one_unit_lose_neither_rows(where):
    spec = make_spec(where)
    protocol(spec, FakeGenerate(fail={0: TIMEOUT, 1: TIMEOUT})).run(UNIT, unit_rows(3))
    rows = unit_rows(3)
    second = protocol(spec, FakeGenerate(), run_id="run-r2", actor_id="actor-r2", retry=True)
    racer = threading.Thread(target=lambda: second.run(UNIT, rows.take([1])))

    def start_the_other_merge():
        # It merges while this one generates: on S3 it lands first, and this one's If-Match
        # fails and it merges again; on a file system they take turns.
        racer.start()
        racer.join(timeout=3)

    first = protocol(spec, FakeGenerate(during=start_the_other_merge), run_id="run-r1", retry=True)
    assert first.run(UNIT, rows.take([0])).committed
    racer.join()
    merged = {r["id"]: r for r in first.store.read_unit(UNIT).to_pylist()}
    assert [merged[i]["output"] for i in range(3)] == ["PROMPT 0", "PROMPT 1", "PROMPT 2"]
    assert UnitCounts.from_json(first.store.unit_stats(UNIT)).errors == 0


def test_a_failed_generate_is_recorded_and_raised(where):
    p = protocol(make_spec(where), FakeGenerate(raises=RuntimeError("the engine died")))
    with pytest.raises(RuntimeError, match="the engine died"):
        p.run(UNIT, unit_rows())
    assert outcomes(p.store) == ["failed"] and p.store.committed_units() == set()


def test_after_max_attempts_of_failures_the_rows_become_engine_error_records(where):
    spec = make_spec(where, max_attempts=2)
    failing = protocol(spec, FakeGenerate(raises=RuntimeError("CUDA error: illegal memory access")))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            failing.run(UNIT, unit_rows(3, bad=(1,)))
    generate = FakeGenerate()
    done = protocol(spec, generate).run(UNIT, unit_rows(3, bad=(1,)))
    assert done.committed and not generate.calls
    table = failing.store.read_unit(UNIT).to_pylist()
    assert [r["error_class"] for r in table] == [ENGINE_ERROR, BAD_INPUT, ENGINE_ERROR]
    assert "failed on this row's unit 2 times" in table[0]["error"] and "illegal memory access" in table[0]["error"]
    assert table[1]["error"] == "row 1 has no text"  # its own reason is kept
    assert UnitCounts.from_json(failing.store.unit_stats(UNIT)).errors_by_class == {BAD_INPUT: 1, ENGINE_ERROR: 2}


def test_after_max_attempts_lost_with_their_node_the_rows_become_preempted_exhausted(where):
    spec = make_spec(where, max_attempts=2)
    store = OutputStore(*where)
    for actor in ("actor-1", "actor-2"):
        open_attempt(store, "run-a", actor)  # never ended, never beat: lost with their nodes
    done = protocol(spec, FakeGenerate()).run(UNIT, unit_rows())
    assert done.committed and done.errors_by_class == {PREEMPTED_EXHAUSTED: 4}
    assert "lost with its node 2 times" in store.read_unit(UNIT).column("error")[0].as_py()


def test_of_two_actors_giving_up_on_one_unit_only_one_commits_its_error_records(where):
    """Both give up on the same exhausted unit with the same error records: the storage must
    still tell the second writer from the first (on S3 a lost write is told by its bytes)."""
    spec = make_spec(where, max_attempts=2)
    store = OutputStore(*where)
    for actor in ("actor-1", "actor-2"):
        open_attempt(store, "run-a", actor)
    gave_up = [protocol(spec, FakeGenerate(), actor_id=actor).commits.failed(UNIT, unit_rows(), PREEMPTED_EXHAUSTED,
                                                                            "lost with its node")
               for actor in ("actor-x", "actor-y")]
    assert [g.committed for g in gave_up] == [True, False]


def test_error_records_of_a_run_moved_aside_are_never_committed_into_the_next_run(where):
    """A late actor of a superseded run gives up on a unit: its error records are not the new
    run's, and the unit stays pending for it."""
    spec = make_spec(where, max_attempts=2)
    store = OutputStore(*where)
    for actor in ("actor-1", "actor-2"):
        open_attempt(store, "run-a", actor)
    store.put("_spotbatch/fingerprint", b"the-new-run")  # --new-run moved run-a's results aside
    late = protocol(spec, FakeGenerate()).run(UNIT, unit_rows())
    assert late.skipped == SUPERSEDED and not late.committed
    assert store.committed_units() == set()


def test_a_stop_request_takes_no_new_unit(where):
    p = protocol(make_spec(where), FakeGenerate())
    p.records.request_stop("run-a", "budget")
    assert p.run(UNIT, unit_rows()).skipped == "stop: budget"
    assert p.store.committed_units() == set() and outcomes(p.store) == []


def test_a_retry_merges_the_retried_rows_and_every_other_row_stays_as_it_was(where):
    spec = make_spec(where)
    first = protocol(spec, FakeGenerate(fail={1: TIMEOUT, 3: TIMEOUT}))
    assert first.run(UNIT, unit_rows(5, bad=(4,))).errors_by_class == {TIMEOUT: 2, BAD_INPUT: 1}
    before = first.store.read_unit(UNIT).to_pylist()

    retried_rows = unit_rows(5, bad=(4,)).take([1, 3])  # the read stage hands over only the failed rows
    retry = protocol(spec, FakeGenerate(), run_id="run-retry", retry=True)
    assert retry.run(UNIT, retried_rows).committed
    after = {r["id"]: r for r in retry.store.read_unit(UNIT).to_pylist()}
    assert sorted(after) == [0, 1, 2, 3, 4]
    for row in before:
        if row["id"] in (1, 3):
            assert after[row["id"]]["output"] == f"PROMPT {row['id']}" and after[row["id"]]["error"] is None
        else:
            assert after[row["id"]] == row  # untouched, the bad_input row included
    footer = UnitCounts.from_json(retry.store.unit_stats(UNIT))
    assert (footer.rows, footer.errors, footer.errors_by_class) == (5, 1, {BAD_INPUT: 1})
    assert footer.completion_tokens == 2 * 3 + 2 * 3  # the first attempt's two rows and the retry's two
    replaced = retry.store.find("_spotbatch/replaced")
    assert len(replaced) == 1  # the version before the merge is kept


def test_a_merge_that_loses_a_race_keeps_one_copy_of_the_version_it_replaced(where, monkeypatch):
    """Another merge lands between this merge's read and its replace: this try loses, reads
    again and wins; only the version it replaced is kept, not one per try."""
    import io

    import pyarrow.parquet as pq

    spec = make_spec(where)
    protocol(spec, FakeGenerate(fail={1: TIMEOUT})).run(UNIT, unit_rows(3))
    retry = protocol(spec, FakeGenerate(), run_id="run-retry", retry=True)
    storage, raced = retry.store.storage, []
    real_read = storage.read_versioned

    def read_then_another_merge_lands(path):
        found = real_read(path)
        if not raced:
            raced.append(path)
            other = io.BytesIO()  # the same rows in other bytes: another version
            pq.write_table(pq.read_table(io.BytesIO(found[0])), other, compression="none")
            storage.put(path, other.getvalue())
        return found
    monkeypatch.setattr(storage, "read_versioned", read_then_another_merge_lands)
    assert retry.run(UNIT, unit_rows(3).take([1])).committed
    assert raced and len(retry.store.find("_spotbatch/replaced")) == 1


def test_a_claim_whose_answer_was_lost_after_it_landed_is_ours_not_held_by_another(where, monkeypatch):
    """The attempt's start record landed but the answer to its create was lost (a dropped
    connection; on S3 the SDK's retry then meets 412): the claim is ours, and the unit is run."""
    import os

    p = protocol(make_spec(where), FakeGenerate())
    fs, lost = p.store.storage.fs, []

    def lose_the_first_claims_answer(target: str) -> None:
        if target.endswith(".start.json") and not lost:
            lost.append(target)
            raise ConnectionError(f"{target}: no answer")
    if p.store.root.startswith("/"):
        real_link = os.link

        def link(src, dst):
            real_link(src, dst)
            lose_the_first_claims_answer(dst)
        monkeypatch.setattr(os, "link", link)
    else:
        real_call = fs.call_s3  # what s3fs's files send their PUT through

        def call(method, *args, **kwargs):
            answer = real_call(method, *args, **kwargs)
            if method == "put_object":
                lose_the_first_claims_answer(kwargs["Key"])
            return answer
        monkeypatch.setattr(fs, "call_s3", call)
    done = p.run(UNIT, unit_rows())
    assert lost and done.skipped is None and done.committed


def test_answers_are_shared_through_the_cache_keyed_by_every_sampling_parameter(where, tmp_path):
    cache = ResponseCache(str(tmp_path / "cache"))
    spec = make_spec(where)
    first = protocol(spec, FakeGenerate(), cache=cache)
    first.run(UNIT, unit_rows())
    keys = first.request_keys(["prompt 0"], [None])
    assert set(cache.lookup(keys)) == set(keys)

    generate = FakeGenerate()
    again = protocol(spec, generate, run_id="run-b", cache=ResponseCache(str(tmp_path / "cache")))
    done = again.run("00001-other", unit_rows())
    assert done.reused_rows == 4 and done.completion_tokens == 0 and done.reused_completion_tokens == 12

    warmer = make_spec(where)
    warmer.sampling.temperature, warmer.sampling.seed = 0.7, 1
    assert protocol(warmer, generate, cache=cache).request_keys(["prompt 0"], [None]) != keys
    assert first.request_keys(["prompt 0"], [7]) != keys  # its own max_tokens
    warmer.sampling.seed = None
    assert protocol(warmer, generate, cache=cache).request_keys(["prompt 0"], [None]) == [None]  # a fresh sample


def test_a_run_waiting_for_another_runs_unit_takes_it_when_that_run_dies(where):
    store = OutputStore(*where)
    records = Records(store)
    open_attempt(store, "run-a", "actor-a")
    beat(store, "actor-a", age=2 * HEARTBEAT_SECONDS - 1.5)  # fresh now, stale in 1.5 s: A died
    started = time.monotonic()
    assert await_other_runs(records, [UNIT], "run-b", OtherRunsWait(poll_seconds=0.2)) == ({UNIT}, set())  # ours now
    assert 1.0 < time.monotonic() - started < 30


def test_a_run_waiting_for_another_runs_unit_returns_when_that_run_commits_it(where):
    spec = make_spec(where)
    store = OutputStore(*where)
    open_attempt(store, "run-a", "actor-a")
    beat(store, "actor-a", age=0)
    a = protocol(spec, FakeGenerate(), run_id="run-a", actor_id="actor-a2")
    threading.Timer(1.0, lambda: a.run(UNIT, unit_rows())).start()  # A's restarted actor finishes it
    assert await_other_runs(Records(store), [UNIT], "run-b", OtherRunsWait(poll_seconds=0.2)) == (set(), set())


def test_a_unit_held_by_a_hung_engine_is_not_held(where):
    """Its actor still beats, but its engine made no step since the unit's attempt began."""
    store = OutputStore(*where)
    open_attempt(store, "run-a", "actor-a")
    started = time.time()
    spec = make_spec(where, request_timeout_seconds=30)
    Records(store).actor_beat("actor-a", {"time": started, "engine": {"last_step_at": started - 100}})
    assert protocol(spec, FakeGenerate(), run_id="run-b").run(UNIT, unit_rows()).skipped == SKIP_HELD  # not yet
    Records(store).actor_beat("actor-a", {"time": started + 31, "engine": {"last_step_at": started - 100}})
    records = Records(store)
    assert not records.open_elsewhere(records.unit_attempts(UNIT), "run-b", stall_seconds=30, now=started + 31)
    Records(store).actor_beat("actor-a", {"time": started + 31, "engine": {"last_step_at": started + 30}})
    assert records.open_elsewhere(records.unit_attempts(UNIT), "run-b", stall_seconds=30, now=started + 31)


def test_waiting_for_another_run_is_bounded(where):
    store = OutputStore(*where)
    open_attempt(store, "run-a", "actor-a")
    keep_beating = threading.Event()
    beat(store, "actor-a", age=0)

    def beat_forever():
        while not keep_beating.wait(0.2):
            beat(store, "actor-a", age=0)

    threading.Thread(target=beat_forever, daemon=True).start()
    started = time.monotonic()
    try:
        assert await_other_runs(Records(store), [UNIT], "run-b",
                                OtherRunsWait(max_wait_seconds=1.0, poll_seconds=0.2)) == (set(), {UNIT})
    finally:
        keep_beating.set()
    assert 1.0 <= time.monotonic() - started < 10


def test_a_unit_whose_input_changed_runs_nothing_and_stays_pending(where):
    from operators.failures import INPUT_CHANGED

    generate = FakeGenerate()
    p = protocol(make_spec(where, max_attempts=1), generate)
    left = p.unreadable(UNIT, Skip.INPUT_CHANGED, "input_changed: in/part-0.parquet changed since the run was planned")
    assert not left.committed and left.skipped.startswith(INPUT_CHANGED) and not generate.calls
    (attempt,) = Records(p.store).unit_attempts(UNIT).values()
    assert attempt["end"]["error_class"] == INPUT_CHANGED and p.store.committed_units() == set()
    assert p.run(UNIT, unit_rows()).committed  # not the unit's fault: it counts against no attempt limit


def test_an_engine_death_in_company_is_not_held_against_a_unit_which_then_runs_alone(where):
    """Three units in one engine when it died: none of them is failed for it; each runs its
    next attempt alone, and only a unit that kills the engine alone uses up its attempts."""
    from operators.engine_turns import EngineTurns

    turns = EngineTurns()
    spec = make_spec(where, max_attempts=1)
    neighbours_in = threading.Barrier(3)
    dead = threading.Event()

    def neighbour():
        with turns.shared():
            neighbours_in.wait()
            dead.wait(5)

    others = [threading.Thread(target=neighbour) for _ in range(2)]
    for t in others:
        t.start()

    def engine_dies():
        neighbours_in.wait()
        dead.set()
        raise RuntimeError("EngineFailed: the engine process died")

    with pytest.raises(RuntimeError):
        protocol(spec, FakeGenerate(during=engine_dies), turns=turns).run(UNIT, unit_rows())
    for t in others:
        t.join()
    (first,) = Records(OutputStore(*where)).unit_attempts(UNIT).values()
    assert first["end"]["in_engine"] == 3

    alone_seen = []
    healthy = FakeGenerate(during=lambda: alone_seen.append(turns._alone))
    done = protocol(spec, healthy, turns=turns).run(UNIT, unit_rows())  # max_attempts 1, yet tried again
    assert done.committed and done.errors == 0 and alone_seen == [True]


def test_a_unit_that_kills_the_engine_alone_ends_as_engine_error_records(where):
    spec = make_spec(where, max_attempts=2)
    poison = protocol(spec, FakeGenerate(raises=RuntimeError("EngineFailed: segfault")))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            poison.run(UNIT, unit_rows())
    done = protocol(spec, FakeGenerate()).run(UNIT, unit_rows())
    assert done.committed and done.errors_by_class == {ENGINE_ERROR: 4}


def test_a_unit_waiting_to_run_alone_waits_for_the_engine_to_empty_and_holds_new_units_back():
    from operators.engine_turns import EngineTurns

    turns, order = EngineTurns(), []
    first_in = threading.Event()

    def shared(name, hold):
        with turns.shared():
            order.append(f"{name} in")
            first_in.set()
            time.sleep(hold)
            order.append(f"{name} out")

    def alone():
        with turns.alone():
            order.append("alone in")
            time.sleep(0.2)
            order.append("alone out")

    a = threading.Thread(target=shared, args=("a", 0.5))
    a.start()
    first_in.wait()
    s = threading.Thread(target=alone)
    s.start()
    time.sleep(0.1)
    b = threading.Thread(target=shared, args=("b", 0))
    b.start()
    for t in (a, s, b):
        t.join()
    assert order == ["a in", "a out", "alone in", "alone out", "b in", "b out"]


def test_a_shared_cache_never_answers_from_another_checkpoint_or_dtype(where, tmp_path):
    from pipelines.unit.protocol import model_cache_key

    spec = make_spec(where)
    checkpoint = {"kind": "local", "where": "/models/ft", "pin": {"files": {"model.safetensors": [10, "a"]}}}
    newer = {**checkpoint, "pin": {"files": {"model.safetensors": [10, "b"]}}}
    first = protocol(spec, FakeGenerate(), cache=ResponseCache(str(tmp_path / "cache")),
                     model_key=model_cache_key(spec, checkpoint, "float32"))
    first.run(UNIT, unit_rows())
    for n, (source, dtype) in enumerate([(newer, "float32"), (checkpoint, "bfloat16")]):
        generate = FakeGenerate()
        other = protocol(spec, generate, run_id="run-b", cache=ResponseCache(str(tmp_path / "cache")),
                         model_key=model_cache_key(spec, source, dtype))
        done = other.run(f"0000{n + 1}-other", unit_rows())
        assert done.reused_rows == 0 and len(generate.calls) == 1  # a miss: the engine answered
    same = protocol(spec, FakeGenerate(), run_id="run-c", cache=ResponseCache(str(tmp_path / "cache")),
                    model_key=model_cache_key(spec, checkpoint, "float32"))
    assert same.run("00003-again", unit_rows()).reused_rows == 4  # the key can hit: the misses above mean something


def test_every_sampling_field_and_a_rows_own_sampling_are_in_the_cache_key(where):
    from pipelines.spec import SamplingSpec

    spec = make_spec(where)
    p = protocol(spec, FakeGenerate())
    base = spec.sampling.model_dump(mode="json")
    plain = p.request_keys(["q"], [None])[0]
    assert plain is not None and p.request_keys(["q"], [None], [base])[0] == plain  # the same sampling, the same key
    changes = [{"temperature": 0.5}, {"top_p": 0.9}, {"top_k": 5}, {"min_p": 0.1}, {"presence_penalty": 1.0},
               {"frequency_penalty": 1.0}, {"repetition_penalty": 1.2}, {"logprobs": True, "top_logprobs": 2},
               {"stop": ["x"]}, {"seed": 9}, {"structured": {"choice": ["a", "b"]}},
               {"response_format": {"type": "json_object"}}]
    keys = [p.request_keys(["q"], [None], [SamplingSpec(**{**base, **c}).model_dump(mode="json")])[0] for c in changes]
    assert None not in keys and len(set(keys + [plain])) == len(changes) + 1  # each field its own answer
    for never_shared in ({"n": 2}, {"temperature": 0.7, "seed": None}):
        assert p.request_keys(["q"], [None], [{**base, **never_shared}]) == [None]


def test_the_fingerprint_of_a_spec_written_before_the_new_sampling_fields_is_unchanged():
    """Outputs written before `top_k`, `n`, `logprobs`, ... existed resume: their sampling
    digest is what that version wrote (this figure was computed by it)."""
    from pipelines.planning.units import fingerprint_parts

    spec = PipelineSpec(input={"paths": "in", "prompt_column": "text"}, model={"name": "tiny-random"},
                        sampling={"max_tokens": 32, "stop": ["x"]}, output={"path": "o"})
    assert fingerprint_parts(spec, [])["sampling"] == "913e3685eb25fdfb"
    spec.sampling.top_k = 40
    assert fingerprint_parts(spec, [])["sampling"] != "913e3685eb25fdfb"


def test_a_large_fleets_slower_beat_still_holds_its_units_and_ends_its_cost(where):
    from pipelines.store.ledger import actor_end
    from pipelines.store.records import beat_seconds

    period = beat_seconds(1000)  # 50 s: 20 beat PUTs a second for the whole fleet
    store = OutputStore(*where)
    open_attempt(store, "run-b", "actor-b")
    Records(store).actor_beat("actor-b", {"time": time.time() - 1.5 * period, "period": period})
    assert Records(store).open_elsewhere(Records(store).unit_attempts(UNIT), "run-a")  # live at its own period
    Records(store).actor_beat("actor-b", {"time": time.time() - 2.5 * period, "period": period})
    assert not Records(store).open_elsewhere(Records(store).unit_attempts(UNIT), "run-a")
    lost = {"last_seen": 1000.0, "beat_seconds": period, "run_id": "r"}
    assert actor_end(lost, {"r": {"ended_at": 5000.0}}, now=6000.0) == 1000.0 + period
