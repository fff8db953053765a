"""An engine actor's setup (pipelines/engine/actor.py): its process prepared before vLLM is
imported, then the weights planning pinned put on this node and loaded into the engine."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from cluster.cpu_priority import restore_priority
from cluster.models import ModelChangedError, ModelSource, resolve
from cluster.models.adapters import adapters_on_node
from operators.engine import EngineConfig, VLLMEngine, engine_env
from operators.feeder import EngineFeeder
from pipelines.engine.compile_cache import around_engine_start
from pipelines.redact import redact_url
from pipelines.spec import PipelineSpec
from pipelines.store.records import Records


def prepare_process(spec: PipelineSpec) -> int:
    """Set this process up for an engine; returns its niceness (restored before the engine's
    threads exist: they inherit it)."""
    niceness = restore_priority()
    # Before vLLM (and torch) are imported: thread counts are read once, at load.
    os.environ.update(engine_env(spec.compute.gpus_per_actor, spec.compute.engine_threads))
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return niceness


@dataclass(frozen=True)
class EngineLoad:
    """What to load, and where its run's records are (the dtype the run's engines load)."""

    spec: PipelineSpec
    source: ModelSource
    model_name: str  # its record name (pipelines/engine/actor.py's MODEL, or a routed model's)
    tensor_parallel_size: int
    enforce_eager: bool  # the driver's compile choice (pipelines/engine/compile_choice.py)
    adapter_sources: dict[str, Any] | None = None  # the LoRA adapters planning pinned (RunRequest's)


@dataclass(frozen=True)
class StartedEngine:
    feeder: EngineFeeder
    fetched: dict[str, Any]  # how the weights got here
    loaded: str  # the dtype loaded
    start: dict[str, Any]  # what the start cost: its seconds, and the compile cache's report


def engine_config(load: EngineLoad, model_path: str, pinned_dtype: str | None = None) -> EngineConfig:
    """The engine's configuration: the spec's model, loaded from `model_path`, with its LoRA
    adapters put on this node as planning pinned them. A GPU engine is configured by this too."""
    spec = load.spec
    adapters, rank = adapters_on_node(spec.model, load.adapter_sources or {})
    return EngineConfig(
        model_path=model_path,
        dtype=pinned_dtype or spec.model.dtype,
        max_model_len=spec.model.max_model_len,
        quantization=spec.model.quantization,
        enforce_eager=load.enforce_eager,
        tensor_parallel_size=load.tensor_parallel_size,
        seed=spec.sampling.seed or 0,
        engine_kwargs=spec.model.engine_kwargs,
        chat_template=spec.model.chat_template,
        chat_template_kwargs=spec.model.chat_template_kwargs,
        tool_parser=spec.model.tool_parser,
        reasoning_parser=spec.model.reasoning_parser,
        task=spec.task,
        adapters=adapters,
        lora_rank=rank,
    )


def start_engine(load: EngineLoad, records: Records, actor_id: str) -> StartedEngine:
    """Put exactly the weights planning pinned on this node (cluster/models) and load them
    into the engine.

    One output, one dtype: `auto` is float32 on a CPU without bf16 and bf16 elsewhere, so
    the first engine's choice is recorded (as `actor_id`'s) and every later engine of the run
    loads it."""
    spec = load.spec
    model_path, fetched = resolve(spec.model, load.source)
    pinned_dtype = records.loaded_dtype(load.model_name)
    config = engine_config(load, str(model_path), pinned_dtype)
    shared = spec.model.compile_cache
    began = time.time()
    # What other nodes compiled is copied in first, and what this engine compiles is shared.
    with around_engine_start(shared.path if shared else None, shared.storage_options if shared else None,
                             compiles=not config.enforce_eager) as report:
        # Built on the feeder's thread, which alone runs it (operators/feeder.py says why).
        feeder = EngineFeeder(lambda: VLLMEngine(config), spec.compute.max_tokens_in_flight)
    # What the choice cost: the engine's start (its load and, compiled, its compile).
    start = {"engine_start_seconds": round(time.time() - began, 2), **({"cache": report.to_json()} if report else {})}
    loaded = feeder.engine.loaded_dtype
    if records.pin_loaded_dtype(load.model_name, loaded, actor_id) != loaded:  # another node's first engine won
        raise ModelChangedError(f"model {redact_url(spec.model.name)!r}: this engine loaded {loaded}, the run's "
                                f"engines load {records.loaded_dtype(load.model_name)} (two first engines on "
                                f"different hardware); set model.dtype to that and run again")
    return StartedEngine(feeder, {**fetched, "dtype_from_run": pinned_dtype is not None}, loaded, start)
