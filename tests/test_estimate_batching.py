"""The estimate's step model: the feeder's per-step sums, the fit the engine facts keep, the
simulation of continuous batching it times an engine with, and the estimate saying which model
gave its seconds. A fake engine on a fake clock, so every figure is exact."""

import json

import pytest
import yaml

from operators import feeder as feeder_module
from operators.batching import Request
from operators.engine import Completion
from operators.feeder import EngineFeeder
from operators.step_model import StepModel, StepSums, fit_steps
from pipelines.engine import facts as engine_facts
from pipelines.estimate.batching import Engine, Row, engine_seconds, simulate
from pipelines.spec import load_spec
from tests.test_estimate import estimate_json, write_spec

FIXED, PER_SEQUENCE, PER_PROMPT_TOKEN = 0.004, 0.0015, 0.0002


class Clock:
    """Stands for the time module in operators/feeder.py: monotonic() is what the engine spent."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def time(self):
        return 1e9 + self.now


class TimedEngine:
    """Each step makes one token for each running request and takes FIXED + PER_SEQUENCE * b, and
    PER_PROMPT_TOKEN for each prompt token added since the step before."""

    prefix_block_tokens = 0  # KV counted as prompt + max_tokens, no blocks

    def __init__(self, clock: Clock):
        self.clock, self.running, self.prompts = clock, {}, 0

    def kv_capacity_tokens(self):
        return 1 << 20

    def add(self, request_id, token_ids, sampling):
        self.running[request_id] = [len(token_ids), 0, sampling["max_tokens"]]
        self.prompts += len(token_ids)

    def abort(self, request_ids):
        for rid in request_ids:
            self.running.pop(rid, None)

    def step(self):
        self.clock.now += FIXED + PER_SEQUENCE * len(self.running) + PER_PROMPT_TOKEN * self.prompts
        self.prompts = 0
        done = []
        for rid, state in list(self.running.items()):
            state[1] += 1
            if state[1] >= state[2]:
                del self.running[rid]
                done.append((rid, Completion(text="x", finish_reason="length", prompt_tokens=state[0],
                                             completion_tokens=state[1])))
        return done


def test_the_feeder_sums_each_step_against_its_running_requests_and_the_fit_finds_the_line(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(feeder_module, "time", clock)
    engine = TimedEngine(clock)
    feeder = EngineFeeder(engine, token_budget=420)  # room for the first six: 50 prompt tokens + 5k max_tokens each
    futures = feeder.submit([Request(k, [1] * 50, 5 * (k % 6 + 1)) for k in range(12)], {"temperature": 0.0})
    for f in futures:
        f.result(timeout=10)
    sums = StepSums.from_json(json.loads(json.dumps(feeder.stats.to_json()))["step_sums"])  # as a beat carries it
    assert sums.n >= 30 and (sums.b_min, sums.b_max, sums.p) == (1, 6, 600)
    fit = fit_steps(sums)
    assert fit.fixed == pytest.approx(FIXED) and fit.per_sequence == pytest.approx(PER_SEQUENCE)
    assert fit.per_prompt_token == pytest.approx(PER_PROMPT_TOKEN)
    assert feeder.stats.busy_seconds == pytest.approx(sums.t)  # the old figure stays beside it
    assert feeder.stats.output_shares[-1] == 12 and sum(feeder.stats.output_shares) == 12  # each used all it may


class QueueingEngine(TimedEngine):
    """As vLLM: it runs at most max_num_seqs requests a step, the first added; the rest wait.
    Prompts cost nothing here, so a step's time is its running count's alone."""

    max_num_seqs = 4

    def add(self, request_id, token_ids, sampling):
        super().add(request_id, token_ids, sampling)
        self.prompts = 0

    def step(self):
        waiting = {rid: self.running.pop(rid) for rid in list(self.running)[self.max_num_seqs:]}
        done = super().step()
        self.running.update(waiting)
        return done


def test_a_step_counts_only_the_requests_the_engine_runs_not_those_it_queues_beyond_max_num_seqs(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(feeder_module, "time", clock)
    feeder = EngineFeeder(QueueingEngine(clock), token_budget=420)  # the budget lets six in; four run
    for f in feeder.submit([Request(k, [1] * 50, 5 * (k % 6 + 1)) for k in range(12)], {"temperature": 0.0}):
        f.result(timeout=10)
    sums = feeder.stats.step_sums
    assert sums.b_max == 4
    fit = fit_steps(sums)
    assert fit.fixed == pytest.approx(FIXED) and fit.per_sequence == pytest.approx(PER_SEQUENCE)


def test_prompts_all_computed_in_the_first_step_fit_no_prompt_term_that_would_absorb_its_one_time_cost(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(feeder_module, "time", clock)
    feeder = EngineFeeder(TimedEngine(clock), token_budget=1 << 20)  # all twelve go in before the first step
    for f in feeder.submit([Request(k, [1] * 50, 5 * (k % 6 + 1)) for k in range(12)], {"temperature": 0.0}):
        f.result(timeout=10)
    sums = feeder.stats.step_sums
    assert sums.p_steps == 1
    fit = fit_steps(sums)
    assert fit.per_prompt_token == 0 and fit.per_sequence > 0


class MiscountingEngine(TimedEngine):
    """Its completions carry no token count (None): the feeder's figures cannot add them."""

    def step(self):
        return [(rid, Completion(text="x", finish_reason="length", prompt_tokens=1, completion_tokens=None))
                for rid, _ in super().step()]


def test_an_error_counting_a_finished_request_never_leaves_its_caller_waiting(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(feeder_module, "time", clock)
    feeder = EngineFeeder(MiscountingEngine(clock), token_budget=1 << 20)
    futures = feeder.submit([Request(k, [1] * 5, 2) for k in range(3)], {"temperature": 0.0})
    assert futures[0].result(timeout=5).text == "x"  # answered before the count failed
    for f in futures[1:]:
        assert f.exception(timeout=5) is not None  # the others fail at once (EngineFailed), never hang


def test_a_fit_from_too_few_steps_or_one_running_count_is_refused():
    few, flat = StepSums(), StepSums()
    for b in (1, 2, 3) * 3:
        few.add(b, 0.1 * b)
    for _ in range(100):
        flat.add(8, 0.2)
    assert fit_steps(few) is None and fit_steps(flat) is None


def test_a_fit_never_has_a_negative_part():
    # t = 0.1 b - 0.05: the free line's fixed part is -0.05 s; a step costs no less than nothing,
    # so the fit is the best with fixed >= 0: fixed 0 and the slope through the origin.
    sums = StepSums()
    for b in (1, 2, 3, 4) * 10:
        sums.add(b, 0.1 * b - 0.05)
    fit = fit_steps(sums)
    assert fit.fixed == 0 and fit.per_prompt_token == 0
    assert fit.per_sequence == pytest.approx(sums.bt / sums.bb)


def actor(sums: StepSums, busy: float = 20.0, budget: int = 30_000) -> dict:
    return {"run_id": "r5", "instance_type": "cpu-2vcpu", "compile": {"enforce_eager": True},
            "engine": {"busy_seconds": busy, "completion_tokens": 2000, "token_budget": budget,
                       "step_sums": sums.to_json(), "output_shares": [1] + [0] * 18 + [3]}}


def line(steps: int, b_values=(1, 2, 3, 4)) -> StepSums:
    sums = StepSums()
    for k in range(steps):
        b = b_values[k % len(b_values)]
        sums.add(b, FIXED + PER_SEQUENCE * b)
    return sums


def test_the_engine_facts_keep_a_fit_per_type_pooled_over_engines_and_keep_the_last_when_a_run_has_none(tmp_path):
    spec = load_spec(write_spec(tmp_path, "smollm2-135m"))
    path = tmp_path / "facts.json"
    engine_facts.remember_run(spec, {"a": actor(line(40)), "b": actor(line(40, (6, 8)))}, "r5", path)
    kept = engine_facts.lookup(spec.model, 0.0, path)["on"]["cpu-2vcpu"]
    assert kept["eager_step_model"]["fixed"] == pytest.approx(FIXED)
    assert kept["eager_step_model"]["per_sequence"] == pytest.approx(PER_SEQUENCE)
    fit = kept["eager_step_model"]
    assert (fit["b_min"], fit["b_max"], fit["steps"]) == (1, 8, 80)
    assert kept["kv_tokens"] == 30_000 and kept["tokens_per_second"] == 100.0
    assert engine_facts.lookup(spec.model, 0.0, path)["output_shares"] == {"bins": [2] + [0] * 18 + [6], "run_id": "r5"}
    short = {**actor(line(5)), "run_id": "r6"}
    engine_facts.remember_run(spec, {"a": short}, "r6", path)
    kept = engine_facts.lookup(spec.model, 0.0, path)["on"]["cpu-2vcpu"]
    assert kept["run_id"] == "r6" and kept["eager_step_model"]["run_id"] == "r5"  # five steps fit nothing


def test_the_simulation_of_a_small_case_worked_by_hand():
    # Rows of 1, 2 and 4 tokens, two at a time, a step costing 1 + 0.5 b seconds:
    # steps 1-1: rows 1 and 2 run (b=2, 2.0 s); row 1 ends, row 3 starts;
    # step 2: rows 2 and 3 (b=2, 2.0 s); row 2 ends;
    # steps 3-5: row 3 alone (b=1, 1.5 s each, 4.5 s): 2 + 2 + 4.5 = 8.5 s.
    engine = Engine(StepModel(fixed=1.0, per_sequence=0.5, b_min=1, b_max=2, steps=100), max_seqs=2)
    assert simulate([Row(1, 10), Row(2, 10), Row(4, 10)], engine) == 8.5
    # KV for 15 tokens: the second row (10 more) waits for the first, so each runs alone:
    # 1 + 2 + 4 steps at 1.5 s.
    assert simulate([Row(1, 10), Row(2, 10), Row(4, 10)], Engine(engine.model, 2, kv_tokens=15)) == 10.5
    # Scaled: twice the sample's tokens is twice its time; a share smaller than it is simulated on part of it.
    rows = [Row(4, 10)] * 8
    assert engine_seconds(rows, 64, engine) == pytest.approx(2 * simulate(rows, engine))
    assert engine_seconds(rows, 8, engine) == pytest.approx(simulate(rows[:2], engine))


def test_the_estimate_simulates_with_a_measured_step_model_and_says_so(tmp_path, capsys, tiny_model):
    spec_path = write_spec(tmp_path, tiny_model, rows=40)
    spec = load_spec(spec_path)
    on = {"tokens_per_second": 400.0, "start_seconds": 5.0, "engines": 1, "run_id": "r1"}
    engine_facts.remember(spec.model, 0.0, {"on": {"cpu-2vcpu": on}, "output_ratio":
                                            engine_facts.output_ratio(250, 1000, "r1")}, "r1")
    before = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"][0]
    assert before["seconds"] == pytest.approx(5.0 + 640 / 400.0)
    assert before["seconds_from"].startswith("tokens/s: measured: 1 engine(s) of run r1")
    model = {"fixed": 0.01, "per_sequence": 0.001, "b_min": 1, "b_max": 48, "steps": 900, "run_id": "r2"}
    engine_facts.remember(spec.model, 0.0, {"on": {"cpu-2vcpu": {**on, "eager_step_model": model}}}, "r2")
    after = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"][0]
    # 40 rows of 16 tokens (64 max_tokens at a quarter), all running at once: 16 steps of 0.01 + 0.04 s.
    assert after["seconds"] == pytest.approx(5.0 + 16 * 0.05)
    assert after["seconds_from"].startswith(
        "step model measured on cpu-2vcpu by run r2 (eager engines), fitted on b=1..48")
    assert after["tokens_per_second"] == pytest.approx(640 / 0.8)
    # Shares measured spread (half the rows used a tenth, half nearly all) and a run's overhead:
    # the same tokens take more steps, some with few rows running, and the overhead is added.
    bins = [10] + [0] * 18 + [10]
    engine_facts.remember(spec.model, 0.0, {"output_shares": {"bins": bins, "run_id": "r3"}, "on": {"cpu-2vcpu": {
        "run_overhead_seconds": 12.0, "run_overhead_run_id": "r3"}}}, "r3")
    spread = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"][0]
    assert spread["seconds"] > 12.0 + after["seconds"]
    assert "plus 12 s of a run's overhead" in spread["seconds_from"] and "by run r3" in spread["seconds_from"]


def test_rows_with_n_choices_decode_their_choices_side_by_side_and_hold_kv_for_each(tmp_path, capsys, tiny_model):
    spec_path = write_spec(tmp_path, tiny_model, rows=40, sampling={"max_tokens": 64, "n": 2})
    spec = load_spec(spec_path)
    on = {"tokens_per_second": 400.0, "start_seconds": 5.0, "engines": 1, "run_id": "r1",
          "eager_step_model": {"fixed": 0.01, "per_sequence": 0.001, "b_min": 1, "b_max": 96, "steps": 900,
                               "run_id": "r1"}}
    engine_facts.remember(spec.model, 0.0, {"on": {"cpu-2vcpu": on}, "output_ratio":
                                            engine_facts.output_ratio(250, 1000, "r1")}, "r1")
    option = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"][0]
    # 40 rows of two choices of 16 tokens (64 max_tokens at a quarter): 80 sequences at once, 16 steps
    # of 0.01 + 0.08 s, for 40 * 2 * 16 = 1280 tokens (not 32 steps of 40 rows).
    assert option["seconds"] == pytest.approx(5.0 + 16 * 0.09)
    # Their KV is the prompt and 64 tokens for each choice: where it holds 40 rows' single choices
    # only, half the rows run at a time.
    engine = Engine(StepModel(0.01, 0.001, 1, 96, 900), max_seqs=256, kv_tokens=20 * (10 + 2 * 64))
    rows = [Row(16, 10 + 2 * 64, 10, 2)] * 40
    assert simulate(rows, engine) == pytest.approx(2 * 16 * (0.01 + 0.001 * 40))


def test_the_estimate_labels_every_figure_its_simulation_used(tmp_path, capsys, tiny_model):
    spec_path = write_spec(tmp_path, tiny_model, rows=40)
    spec = load_spec(spec_path)
    model = {"fixed": 0.01, "per_sequence": 0.001, "b_min": 1, "b_max": 8, "steps": 900, "run_id": "r2"}
    on = {"tokens_per_second": 400.0, "engines": 1, "run_id": "r2", "eager_step_model": model, "kv_tokens": 90_000,
          "kv_tokens_run_id": "r2"}
    engine_facts.remember(spec.model, 0.0, {"on": {"cpu-2vcpu": on}}, "r2")
    said = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"][0]["seconds_from"]
    assert "output lengths all at the expected share (no run measured their spread)" in said
    assert "KV of 90,000 tokens (measured by run r2 on cpu-2vcpu)" in said
    assert "max_num_seqs 256 (vLLM's default, assumed)" in said
    assert "a guess beyond b=8: up to 40 sequences run at once" in said
    engine_facts.remember(spec.model, 0.0, {"output_shares": {"bins": [1] * 20, "run_id": "r3"}}, "r3")
    told = write_spec(tmp_path, tiny_model, rows=40, compute={"max_tokens_in_flight": 50_000})
    said = estimate_json(capsys, told, "--instance-type", "cpu-2vcpu")["options"][0]["seconds_from"]
    assert "output lengths spread as run r3 measured" in said
    assert "KV of 50,000 tokens (compute.max_tokens_in_flight)" in said


def test_a_routed_spec_is_not_timed_by_the_default_models_step_model_or_overhead(tmp_path, capsys, tiny_model):
    models = {"a": {"name": str(tiny_model), "max_model_len": 2048}}
    spec_path = write_spec(tmp_path, tiny_model, rows=40, models=models, route={"column": "text", "default": "a"})
    spec = load_spec(spec_path)
    model = {"fixed": 0.01, "per_sequence": 0.001, "b_min": 1, "b_max": 48, "steps": 900, "run_id": "r2"}
    on = {"tokens_per_second": 400.0, "engines": 1, "run_id": "r2", "eager_step_model": model,
          "run_overhead_seconds": 12.0, "run_overhead_run_id": "r2"}
    for kept in (spec.model, spec.models["a"]):  # the default model's key, and a's: neither times routed rows
        engine_facts.remember(kept, 0.0, {"on": {"cpu-2vcpu": on}}, "r2")
    option = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"][0]
    assert "step model" not in option["seconds_from"] and "overhead" not in option["seconds_from"]
    assert not option["measured"] and "a routed spec is not timed by any one model's measurements" in option[
        "speed_source"]


def test_eager_and_compiled_engines_step_models_are_kept_apart_and_the_estimate_uses_the_runs_mode(
        tmp_path, capsys, tiny_model):
    spec_path = write_spec(tmp_path, tiny_model, rows=40)
    spec = load_spec(spec_path)
    slow = StepSums()
    for k in range(40):
        slow.add((1, 2, 3, 4)[k % 4], 2 * (FIXED + PER_SEQUENCE * (1, 2, 3, 4)[k % 4]))
    compiled = {**actor(line(40)), "compile": {"enforce_eager": False}}
    engine_facts.remember_run(spec, {"a": actor(slow), "b": compiled}, "r5")
    kept = engine_facts.lookup(spec.model, 0.0)["on"]["cpu-2vcpu"]
    assert kept["eager_step_model"]["fixed"] == pytest.approx(2 * FIXED)
    assert kept["compiled_step_model"]["fixed"] == pytest.approx(FIXED)
    eager_said = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"][0]["seconds_from"]
    assert "(eager engines)" in eager_said and f"{2 * FIXED * 1e3:.1f} ms +" in eager_said
    told = yaml.safe_load(spec_path.read_text())
    told["model"]["enforce_eager"] = False  # the run's engines compile (not part of the facts' key)
    spec_path.write_text(yaml.safe_dump(told))
    said = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")["options"][0]["seconds_from"]
    assert "(compiled engines)" in said and f"{FIXED * 1e3:.1f} ms +" in said
