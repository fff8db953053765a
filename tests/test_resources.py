"""The GPU path is the CPU path's code with other numbers: checked here by configuration,
since no GPU is at hand (shared/ENVIRONMENT.md)."""

import pytest
from ray.data import ActorPoolStrategy

from operators.engine import EngineConfig, effective_dtype, engine_env
from pipelines.spec import PipelineSpec
from pipelines.stream.model_feed import actor_resources

BASE = {"input": {"paths": "in/", "prompt_column": "text"}, "output": {"path": "out/"}}


def spec(**compute) -> PipelineSpec:
    return PipelineSpec(**BASE, compute=compute)


def test_gpu_spot_actors_ask_for_gpus_accelerator_and_spot_nodes():
    res = actor_resources(spec(gpus_per_actor=2, cpus_per_actor=8, accelerator_type="L4",
                               spot_resource="spot", resources={"disk_ssd": 1}, min_actors=1, max_actors=6))
    opts = res.map_batches_options()
    assert opts["num_gpus"] == 2 and opts["num_cpus"] == 8
    assert opts["accelerator_type"] == "L4"
    assert opts["resources"] == {"disk_ssd": 1, "spot": 0.001}
    assert isinstance(opts["compute"], ActorPoolStrategy)
    assert (opts["compute"].min_size, opts["compute"].max_size) == (1, 6)
    # a failed actor must be restarted and its unit retried, never given up on
    assert "max_restarts" not in opts and "max_task_retries" not in opts
    assert res.tensor_parallel_size() == 2


def test_warm_gpu_engines_ask_for_the_same_resources_and_come_back_from_a_lost_node():
    res = actor_resources(spec(gpus_per_actor=1, cpus_per_actor=8, accelerator_type="H100", spot_resource="spot",
                               units_in_flight=3))
    opts = res.warm_actor_options()
    assert {k: v for k, v in opts.items() if k not in ("max_restarts", "max_concurrency")} == {
        k: v for k, v in res.map_batches_options().items() if k != "compute"}
    assert opts["num_gpus"] == 1 and opts["resources"] == {"spot": 0.001} and opts["accelerator_type"] == "H100"
    assert opts["max_restarts"] == -1  # a preempted node's warm engine is restarted elsewhere
    assert opts["max_concurrency"] == 3 + 2  # its units at once, and the driver's small calls


def test_cpu_actors_ask_for_no_gpu():
    opts = actor_resources(spec(actors=3)).map_batches_options()
    assert "num_gpus" not in opts and "accelerator_type" not in opts and "resources" not in opts
    assert opts["compute"].min_size == opts["compute"].max_size == 3


def test_gpu_engines_get_no_cpu_engine_settings():
    env = engine_env(gpus=1, cpu_threads=None)
    # The user's hub settings (HF_HUB_OFFLINE, HF_TOKEN, HF_HOME) are theirs: never overridden.
    assert not any(k.startswith(("HF_", "TRANSFORMERS_")) for k in env)
    assert not any(k.startswith("VLLM_CPU") or k == "OMP_NUM_THREADS" for k in env)


def test_a_cpu_engine_with_the_whole_node_pins_every_core():
    env = engine_env(gpus=0, cpu_threads=None, cores=4)
    assert env["OMP_NUM_THREADS"] == "4" and env["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert engine_env(gpus=0, cpu_threads=16, cores=4)["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"


def test_a_cpu_engine_uses_the_compile_cache_that_loads_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("VLLM_USE_AOT_COMPILE", raising=False)
    assert engine_env(gpus=0, cpu_threads=None, cores=4)["VLLM_USE_AOT_COMPILE"] == "0"
    assert "VLLM_USE_AOT_COMPILE" not in engine_env(gpus=1, cpu_threads=None)  # vLLM's default on GPU
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "1")
    assert engine_env(gpus=0, cpu_threads=None, cores=4)["VLLM_USE_AOT_COMPILE"] == "1"


def test_cpu_engines_sharing_a_node_are_not_pinned_to_the_same_cores():
    env = engine_env(gpus=0, cpu_threads=1, cores=4)
    assert env["OMP_NUM_THREADS"] == "1" and env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


@pytest.mark.parametrize("native_bf16, on_cpu", [(True, "auto"), (False, "float32")])
def test_dtype_auto_is_float32_only_on_a_cpu_that_would_emulate_bf16(monkeypatch, native_bf16, on_cpu):
    monkeypatch.setattr("operators.engine.cpu_has_native_bf16", lambda: native_bf16)
    assert effective_dtype("auto", on_cpu=True) == on_cpu
    assert effective_dtype("auto", on_cpu=False) == "auto"
    assert effective_dtype("bfloat16", on_cpu=True) == "bfloat16"  # asked for by name: always


def test_engine_kwargs_pass_through_and_win():
    cfg = EngineConfig(model_path="/m", tensor_parallel_size=2, engine_kwargs={"gpu_memory_utilization": 0.8,
                                                                                "enforce_eager": True})
    kw = cfg.llm_kwargs()
    assert kw["tensor_parallel_size"] == 2 and kw["gpu_memory_utilization"] == 0.8 and kw["enforce_eager"] is True


def test_engine_actors_take_several_units_on_threads_for_continuous_feeding():
    opts = actor_resources(spec(actors=2, gpus_per_actor=1, units_in_flight=3)).map_batches_options()
    pool = opts["compute"]
    assert pool.max_concurrent_calls_per_actor == 3 and pool.enable_true_multi_threading
    assert pool.max_tasks_in_flight_per_actor == 3  # no more queued at an actor than it holds
    assert opts["num_gpus"] == 1
