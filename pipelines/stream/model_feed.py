"""One model's pending units, ready for its engines: the spec the engine actors see, what each
actor holds (its resources) and is bound to (its engine arguments), and the units' descriptors;
then streamed through warm engines (pipelines/engine/warm_feed.py) or Ray Data
(pipelines/stream/ray_data.py), whichever the run keeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster.models.adapters import ADAPTER_KEY
from cluster.resources import ActorResources
from pipelines.engine import compile_choice
from pipelines.engine.decode_work import tokens_ahead
from pipelines.engine.warm_pool import keep_warm_seconds
from pipelines.planning.units import SINGLE_MODEL, Unit, units_in_flight
from pipelines.spec import PipelineSpec
from pipelines.stream.ray_data import rows_through_ray_data
from pipelines.stream.unit_rows import pack_ids

if TYPE_CHECKING:
    from pipelines.run_context import RunContext


@dataclass(frozen=True)
class ModelFeed:
    """What one model's engines are fed, and how."""

    spec: PipelineSpec
    """The run's spec as the engine actors see it: their model as spec.model, the compile choice made."""
    spec_data: dict[str, Any]
    """The whole spec's data: the readers route rows by it."""
    engine_args: dict[str, Any]
    """The engine actor's constructor arguments (pipelines/engine/actor.py)."""
    descriptors: list[dict]
    resources: ActorResources
    keep_warm: float
    """compute.keep_warm_seconds as it applies here; 0: through Ray Data, engines released at the end."""


def actor_resources(spec: PipelineSpec, units_held: int = 2) -> ActorResources:
    c = spec.compute
    low = c.min_actors if c.min_actors is not None else c.actors or 1
    high = c.max_actors if c.max_actors is not None else c.actors or 1
    return ActorResources(
        cpus=c.cpus_per_actor,
        gpus=c.gpus_per_actor,
        accelerator_type=c.accelerator_type,
        spot_resource=c.spot_resource,
        resources=c.resources,
        min_actors=low,
        max_actors=high,
        units_in_flight=c.units_in_flight or units_held,
    )


def model_feed(ctx: RunContext, model: str | None, pending: list[Unit]) -> ModelFeed:
    """`pending`, the units of `model` (None: the run has one), ready for its engines."""
    spec, only_ids = ctx.spec, ctx.only_ids
    spec_data = spec.model_dump(mode="json")  # the readers route rows by the whole spec
    if model is not None:
        spec = spec.for_model(model)  # the engine actors see their own model as spec.model
    resources = actor_resources(spec, units_in_flight(spec, pending))
    descriptors = [u.descriptor(pack_ids(only_ids[u.unit_id]) if only_ids is not None else None) for u in pending]
    choice = compile_choice.for_run(spec, tokens_ahead(spec, pending, only_ids), resources.max_actors)
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"enforce_eager": choice.enforce_eager})})
    engine_args = {
        "spec_data": spec.model_dump(mode="json"),
        "route_name": model,
        "model_source": ctx.plan.models[SINGLE_MODEL if model is None else model],
        "adapter_sources": {k: v for k, v in ctx.plan.models.items() if k.startswith(ADAPTER_KEY)} or None,
        "fingerprint": ctx.plan.fingerprint,
        "run_id": ctx.run_id,
        "tensor_parallel_size": resources.tensor_parallel_size(),
        "retry": only_ids is not None,
        "compile_choice": choice.to_json(),
    }
    return ModelFeed(spec, spec_data, engine_args, descriptors, resources, keep_warm_seconds(spec))


def model_rows(ctx: RunContext, model: str | None, pending: list[Unit]) -> Iterator[dict]:
    """The summary rows of the pending units of one model. Once the run is asked to stop, no
    unit is sent to an engine: warm engines are sent none (pipelines/engine/warm_feed.py), and Ray
    Data's stream is left once its actors hold none (pipelines/stops/drain.py)."""
    from pipelines.engine.warm_feed import rows_through_warm_engines

    feed = model_feed(ctx, model, pending)
    if feed.keep_warm:
        yield from rows_through_warm_engines(feed, ctx.stopped)
    else:
        yield from rows_through_ray_data(feed, ctx.stopped)
