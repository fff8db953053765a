"""Compiling or eager, when the spec leaves it open: by the decoding work ahead of each engine
against the compile cost (pipelines/compile_choice.py)."""

import pytest

from pipelines.compile_choice import COMPILE_GAIN, choose, for_run
from pipelines.spec import PipelineSpec


def spec(**model) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "input": {"paths": "in/", "prompt_column": "text"}, "model": {"name": "tiny-random", **model},
        "sampling": {"max_tokens": 256}, "output": {"path": "out/"}})


def test_a_small_batch_runs_eager_and_a_long_night_compiles():
    assert for_run(spec(), rows=50, engines=1).enforce_eager
    assert not for_run(spec(), rows=100_000, engines=4).enforce_eager


@pytest.mark.parametrize("told", [True, False])
def test_what_the_spec_says_is_what_runs(told):
    choice = for_run(spec(enforce_eager=told), rows=100_000 if told else 5, engines=1)
    assert choice.enforce_eager is told and "in the spec" in choice.reason


def test_the_line_is_where_the_gain_repays_the_cost():
    # 45 s to compile at 100 tokens/s: it pays from 45 * (1 + g) / g seconds of decoding ahead
    seconds = 45.0 * (1 + COMPILE_GAIN) / COMPILE_GAIN
    tokens = seconds * 100.0
    below = choose(None, rows=int(tokens * 0.99 / 256), max_tokens=256, engines=1, gpu=False)
    above = choose(None, rows=int(tokens * 1.01 / 256) + 1, max_tokens=256, engines=1, gpu=False)
    assert below.enforce_eager and not above.enforce_eager
    assert "45 s compile" in above.reason and "the cpu default" in above.reason


def test_a_known_cost_and_speed_move_the_line():
    rows = 2_000  # 512k tokens: compiles at the CPU defaults
    assert not choose(None, rows=rows, max_tokens=256, engines=1, gpu=False).enforce_eager
    assert choose(None, rows=rows, max_tokens=256, engines=1, gpu=False, compile_seconds=900).enforce_eager
    assert choose(None, rows=rows, max_tokens=256, engines=1, gpu=False, eager_tokens_per_second=5000).enforce_eager
    # more engines share the work: each has less ahead
    assert choose(None, rows=rows, max_tokens=256, engines=32, gpu=False).enforce_eager


def test_gpu_engines_weigh_gpu_figures():
    gpu = PipelineSpec.model_validate({**spec().model_dump(mode="json"), "compute": {"gpus_per_actor": 1}})
    assert for_run(gpu, rows=2_000, engines=1).enforce_eager  # 512k tokens are minutes on a GPU
    assert "gpu default" in for_run(gpu, rows=2_000, engines=1).reason
