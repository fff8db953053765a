"""Batching and feeding logic of the generate operator, with a fake engine (never in an
end-to-end test: those use vLLM)."""

import threading
import time

import pytest

from operators.batching import Request, order_for_engine
from operators.engine import Completion, RowRejected
from operators.feeder import EngineFailed, EngineFeeder
from operators.generate import GenerateOperator, RowBatch
from operators.tokens import PromptForm


class FakeEngine:
    """Tokens are characters. A request makes one token per step until its max_tokens; prompts
    holding 'BAD' are refused, 'HANG' never finish; `die_after` steps, the engine raises."""

    max_model_len = 20
    prefix_block_tokens = 4

    def __init__(self, capacity: int = 1000, die_after: int | None = None):
        self.capacity = capacity
        self.die_after = die_after
        self.running: dict[str, list] = {}  # id -> [prompt ids, made, max_tokens]
        self.added: list[str] = []
        self.running_sizes: list[int] = []  # len(running) at each step
        self.tokens_held: list[int] = []
        self.aborted: list[str] = []
        self.steps = 0
        self.may_step = threading.Event()  # clear it to hold the engine still
        self.may_step.set()

    def encode(self, prompt, system_prompt, fmt, sampling=None):
        text = (system_prompt or "") + prompt if fmt == "chat" else prompt
        return [ord(c) for c in text]

    def kv_capacity_tokens(self):
        return self.capacity

    def add(self, request_id, token_ids, sampling):
        if "BAD" in "".join(map(chr, token_ids)):
            raise RowRejected("token id out of range")
        self.added.append("".join(map(chr, token_ids)))
        self.running[request_id] = [token_ids, 0, sampling["max_tokens"]]

    def abort(self, request_ids):
        for rid in request_ids:
            self.aborted.append(rid)
            self.running.pop(rid, None)

    def step(self):
        self.may_step.wait()
        self.steps += 1
        if self.die_after is not None and self.steps > self.die_after:
            raise RuntimeError("engine core died")
        self.running_sizes.append(len(self.running))
        self.tokens_held.append(sum(len(p) + m for p, _, m in self.running.values()))
        time.sleep(0.001)
        done = []
        for rid, state in list(self.running.items()):
            if "HANG" in "".join(map(chr, state[0])):
                continue
            state[1] += 1
            if state[1] >= state[2]:
                del self.running[rid]
                done.append((rid, Completion("ok", len(state[0]), state[1], "length", cached_prompt_tokens=0)))
        return done


SAMPLING = {"max_tokens": 2, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []}


def operator(engine, system_prompt=None, chat=False, budget=None, timeout=None):
    """The operator, called with a unit's row columns as the unit protocol gives them."""
    form = PromptForm(system_prompt, "chat" if chat else "raw")
    op = GenerateOperator(engine, EngineFeeder(engine, budget), SAMPLING, form, timeout)

    def call(prompts, errors, max_tokens=None, keys=None, cached=None):
        return op(RowBatch(prompts, errors, max_tokens, keys), cached)

    return call


def test_rows_with_errors_are_not_sent_and_keep_their_reason():
    engine = FakeEngine()
    out = operator(engine)(["hi", None, "yo"], [None, "prompt is null", None])
    assert out["output"] == ["ok", None, "ok"]
    assert out["error"] == [None, "prompt is null", None]
    assert out["error_class"] == [None, "bad_input", None]
    assert out["prompt_tokens"] == [2, 0, 2] and out["completion_tokens"] == [2, 0, 2]
    assert sorted(engine.added) == ["hi", "yo"]


def test_prompt_longer_than_context_becomes_an_error_record():
    out = operator(FakeEngine(), "SYS:", chat=True)(["short", "x" * 16], [None, None])
    assert out["output"][0] == "ok" and out["prompt_tokens"][0] == len("SYS:short")
    assert out["error"][1] == "prompt is longer than the model's context: 20 tokens, max_model_len is 20"
    assert out["error_class"][1] == "context_too_long" and out["prompt_tokens"][1] == 0


def test_a_rejected_request_fails_alone_and_the_rest_go_on():
    engine = FakeEngine()
    out = operator(engine)(["a", "BAD", "c"], [None] * 3)
    assert out["output"] == ["ok", None, "ok"]
    assert out["error"][1] == "engine rejected the request: token id out of range"
    assert out["error_class"][1] == "bad_input"
    assert sorted(engine.added) == ["a", "c"]  # each good row sent once


def test_a_dead_engine_fails_every_waiting_unit_at_once_and_later_ones_immediately():
    op = operator(FakeEngine(die_after=3))
    started = time.monotonic()
    with pytest.raises(EngineFailed, match="engine core died"):
        op(["a", "b"], [None, None], max_tokens=[50, 50])
    with pytest.raises(EngineFailed, match="failed earlier"):
        op(["c"], [None])
    assert time.monotonic() - started < 5


def test_per_row_max_tokens_and_timeout():
    engine = FakeEngine()
    out = operator(engine, timeout=0.5)(["a", "HANG", "b"], [None] * 3, max_tokens=[3, None, 1])
    assert out["completion_tokens"] == [3, 0, 1]
    assert out["error_class"][1] == "timeout" and "0.5 s" in out["error"][1]
    assert wait_for(lambda: len(engine.aborted) == 1)  # the hung request left the engine


def test_the_next_unit_is_admitted_while_the_first_ones_tail_runs():
    """Two units in flight from two threads, as in an engine actor: the engine never runs a
    unit's tail alone while the other unit still has requests waiting."""
    engine = FakeEngine(capacity=10_000)
    op = operator(engine)
    unit_a = ["a" * 3] * 5 + ["long"]  # one long request at the end of each unit
    unit_b = ["b" * 3] * 6
    results = {}
    t = threading.Thread(target=lambda: results.setdefault("a", op(unit_a, [None] * 6, [2] * 5 + [60])))
    t.start()
    wait_for(lambda: engine.steps > 0)
    results["b"] = op(unit_b, [None] * 6, [40] * 6)
    t.join()
    assert all(e is None for r in results.values() for e in r["error"])
    # A's long request (60 steps) ran beside B's (40 steps): the two units took about the
    # steps of the longer one; fed one unit at a time they would take 60 + 40.
    assert engine.steps <= 65, engine.running_sizes


def test_the_token_budget_caps_what_the_engine_holds_and_an_oversized_request_still_runs():
    engine = FakeEngine()
    out = operator(engine, budget=20)(["aaaa", "bbbb", "cccc", "dddd", "e" * 15], [None] * 5,
                                      max_tokens=[4, 4, 4, 4, 10])
    assert all(e is None for e in out["error"])
    assert engine.tokens_held[0] == 25  # the oversized request went first (longest)...
    over = [n for held, n in zip(engine.tokens_held, engine.running_sizes) if held > 20]
    assert over and set(over) == {1}  # ...and alone; otherwise the budget held
    assert max(engine.running_sizes) == 2


def test_order_keeps_shared_prefixes_together_longest_first():
    shared = [9, 9, 9, 9]
    reqs = [Request("x1", shared + [1], 5), Request("solo", [5, 6, 7, 8, 1, 2, 3], 5),
            Request("x2", shared + [1, 2, 3, 4], 5), Request("short", [1], 5)]
    assert [r.key for r in order_for_engine(reqs, block_tokens=4)] == ["x2", "x1", "solo", "short"]


def wait_for(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_a_unit_waits_for_a_hungry_engine_before_it_starts():
    """A unit in hand starts only when what waits for the engine is under a quarter of its
    budget, so surplus units spend no engine time and are not lost with a node."""
    engine = FakeEngine(capacity=20)
    engine.may_step.clear()
    feeder = EngineFeeder(engine)
    assert feeder.token_budget == 20  # by default, what the KV cache holds
    # 4-token blocks: the first holds 1 shared block and 2 of its own (12 tokens), the next 2 own
    feeder.submit([Request(i, [1] * 5, 5) for i in range(12)], SAMPLING)  # 2 go in; 10 wait, 84 tokens
    entered = threading.Event()
    threading.Thread(target=lambda: (feeder.wait_until_hungry(), entered.set()), daemon=True).start()
    assert not entered.wait(0.3)  # the engine is held: 84 tokens wait, more than 20 / 4
    engine.may_step.set()
    assert entered.wait(5)
    assert feeder.pending() <= 2  # it entered with nothing waiting: at most the 2 running


def test_units_pass_the_hunger_check_one_at_a_time():
    """Two units waiting on one hungry engine: the first holds its turn until it submits, so
    the second sees the engine with the first one's work queued, not the same empty engine."""
    engine = FakeEngine(capacity=20)
    engine.may_step.clear()
    feeder = EngineFeeder(engine)
    feeder.wait_until_hungry()  # this thread's turn: the engine is empty
    second = threading.Event()
    threading.Thread(target=lambda: (feeder.wait_until_hungry(), second.set()), daemon=True).start()
    assert not second.wait(0.3)  # waits for the turn, though the engine is still empty
    feeder.submit([Request(i, [1] * 5, 5) for i in range(12)], SAMPLING)  # gives the turn up
    assert not second.wait(0.3)  # its turn now, but the work just queued fills the engine
    engine.may_step.set()
    assert second.wait(5)
    feeder.release_turn()  # not this thread's turn: nothing happens


def test_identical_requests_are_generated_once_and_cached_ones_not_at_all():
    engine = FakeEngine()
    op = operator(engine)
    prompts = ["aa", "bb", "aa", "cc", "aa"]
    keys = ["k-aa", "k-bb", "k-aa", "k-cc", "k-aa"]
    cached = {"k-cc": {"output": "from cache", "prompt_tokens": 2, "completion_tokens": 7, "finish_reason": "stop"}}
    out = op(prompts, [None] * 5, keys=keys, cached=cached)
    assert sorted(engine.added) == ["aa", "bb"]
    assert out["served_from"] == ["engine", "engine", "duplicate", "cache", "duplicate"]
    assert out["output"][3] == "from cache" and out["completion_tokens"][3] == 7
    assert out["completion_tokens"][2] == out["completion_tokens"][0] == 2
    # A later unit on the same actor gets the earlier answer without the engine.
    again = op(["bb"], [None], keys=["k-bb"])
    assert again["served_from"] == ["duplicate"] and sorted(engine.added) == ["aa", "bb"]


def test_rows_without_a_key_are_never_merged():
    engine = FakeEngine()
    out = operator(engine)(["aa", "aa"], [None, None], keys=[None, None])
    assert out["served_from"] == ["engine", "engine"] and engine.added == ["aa", "aa"]
