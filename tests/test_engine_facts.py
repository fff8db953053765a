"""What earlier runs measured moves the compile choice (pipelines/engine/facts.py): a machine
that runs eager three times faster than the default assumes does not compile a batch whose
decoding is short on it; a measured compile cost and gain replace the defaults; what the spec
tells wins; warm engines and other runs are not measured."""

from pipelines.engine import facts as engine_facts
from pipelines.engine.compile_choice import for_run
from pipelines.spec import PipelineSpec

RUN = "run-1"


def spec(**model) -> PipelineSpec:
    return PipelineSpec.model_validate({"input": {"paths": "x.parquet", "prompt_column": "p"},
                                        "output": {"path": "out"}, "sampling": {"max_tokens": 256},
                                        "model": {"name": "smollm2-135m", **model}})


def actor(eager: bool, start: float, tokens: int, busy: float, run_id: str = RUN, **extra) -> dict:
    return {"run_id": run_id, "model": "smollm2-135m", **extra,
            "compile": {"enforce_eager": eager, "reason": "...", "engine_start_seconds": start},
            "engine": {"completion_tokens": tokens, "busy_seconds": busy}}


ACTORS = {
    "a": actor(True, 3.0, 5300, 20.0),  # 265 tokens/s eager
    "b": actor(False, 40.0, 5800, 20.0),  # 290 compiled: +9%
    "warm": actor(True, 0.0, 100, 50.0, warm={"idle_seconds": 3}),  # started for another run
    "other": actor(True, 99.0, 10, 10.0, run_id="run-0"),
    "short": actor(True, 3.0, 40, 1.0, run_id=RUN),  # 1 s busy: no speed from it
}


def test_a_runs_engines_are_measured_and_kept(tmp_path):
    found = engine_facts.measured(ACTORS, RUN)
    assert found == {"eager_start_seconds": 3.0, "eager_tokens_per_second": 265.0,
                     "compiled_start_seconds": 40.0, "compiled_tokens_per_second": 290.0}
    path = tmp_path / "facts.json"
    engine_facts.remember_run(spec(), ACTORS, RUN, path)
    kept = engine_facts.lookup(spec().model, 0.0, path)
    assert kept["compile_seconds"] == 37.0 and kept["run_id"] == RUN and kept["measured_at"]
    assert engine_facts.lookup(spec(dtype="float32").model, 0.0, path) == {}  # another engine
    assert engine_facts.lookup(spec().model, 1.0, path) == {}  # on a GPU


def test_a_warm_run_that_measured_only_its_output_ratio_keeps_the_engine_figures_dated_as_they_were(tmp_path):
    path = tmp_path / "facts.json"
    engine_facts.remember_run(spec(), ACTORS, RUN, path)
    warm = {"w": actor(True, 0.0, 100, 50.0, run_id="run-2", warm={"idle_seconds": 3})}
    engine_facts.remember_run(spec(), warm, "run-2", path, ratio=engine_facts.output_ratio(60, 100, "run-2"))
    kept = engine_facts.lookup(spec().model, 0.0, path)
    assert kept["run_id"] == RUN and kept["eager_start_seconds"] == 3.0  # still the run that measured them
    assert kept["output_ratio"] == {"ratio": 0.6, "generated_tokens": 60, "allowed_tokens": 100, "run_id": "run-2"}


def test_the_choice_weighs_what_was_measured():
    # 320 prompts of up to 256 tokens on one engine: 819 s of decoding at the default 100 tokens/s
    # (compile), 309 s at the measured 265, where +9% saves 26 s against a 37 s compile (eager).
    assert not for_run(spec(), tokens=320 * 256, engines=1).enforce_eager
    engine_facts.remember_run(spec(), ACTORS, RUN)  # this test's own facts file (conftest)
    choice = for_run(spec(), tokens=320 * 256, engines=1)
    assert choice.enforce_eager and "measured" in choice.reason and "265 tokens/s" in choice.reason
    assert not for_run(spec(), tokens=100_000 * 256, engines=1).enforce_eager  # a long night still compiles
    told = for_run(spec(eager_tokens_per_second=50, compile_seconds=5), tokens=320 * 256, engines=1)
    assert not told.enforce_eager and "model.eager_tokens_per_second" in told.reason  # the spec wins


def test_a_compile_that_gained_nothing_is_never_chosen(tmp_path):
    slower = {"a": actor(True, 3.0, 3000, 10.0), "b": actor(False, 40.0, 2900, 10.0)}
    engine_facts.remember_run(spec(), slower, RUN)
    assert for_run(spec(), tokens=10_000_000 * 256, engines=1).enforce_eager
