"""Engine actor resources as data, and the one adapter that turns them into Ray options.

The GPU path and the CPU path are this same code: only the numbers differ. Tests check the
options a GPU spec produces, since no GPU is at hand to run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Spot nodes carry `--resources '{"<spot_resource>": 1}'`; each actor asks for a sliver of it,
# which pins actors to spot nodes without limiting how many share one.
SPOT_SHARE = 0.001


@dataclass(frozen=True)
class ActorResources:
    cpus: float = 1.0
    gpus: float = 0.0
    accelerator_type: str | None = None
    spot_resource: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    min_actors: int = 1
    max_actors: int = 1
    units_in_flight: int = 1  # calls an actor runs at once (threads); see EngineFeeder

    def custom_resources(self) -> dict[str, float]:
        res = dict(self.resources)
        if self.spot_resource:
            res[self.spot_resource] = res.get(self.spot_resource, 0) + SPOT_SHARE
        return res

    def map_batches_options(self) -> dict[str, Any]:
        """Keyword arguments for `Dataset.map_batches` of the engine stage.

        Ray Data's own actor defaults (max_restarts=-1, max_task_retries=-1) are what spot
        nodes need: a lost node's actors restart elsewhere and its in-flight units are retried.
        """
        from ray.data import ActorPoolStrategy

        # Each call is one unit; several run at once in threads so the engine is fed the next
        # unit while the last one finishes. No more are queued at an actor than it runs, so a
        # lost node takes no more than that with it.
        calls = {"max_concurrent_calls_per_actor": self.units_in_flight, "enable_true_multi_threading": True,
                 "max_tasks_in_flight_per_actor": self.units_in_flight}
        if self.min_actors == self.max_actors:
            pool = ActorPoolStrategy(size=self.min_actors, **calls)
        else:
            pool = ActorPoolStrategy(min_size=self.min_actors, max_size=self.max_actors, **calls)
        return {**self.ray_options(), "compute": pool}

    def warm_actor_options(self) -> dict[str, Any]:
        """Options for `ray.remote(...).options` of a warm engine actor (pipelines/engine/warm_pool.py):
        the same resources; restarted when its node is lost (the driver sends its calls again);
        as many calls at once as it holds units, and room for the driver's small questions."""
        return {**self.ray_options(), "max_restarts": -1, "max_concurrency": self.units_in_flight + 2}

    def ray_options(self) -> dict[str, Any]:
        """What an engine actor asks Ray for, in the words both map_batches and actors take."""
        options: dict[str, Any] = {"num_cpus": self.cpus}
        if self.gpus:
            options["num_gpus"] = self.gpus
        if self.accelerator_type:
            options["accelerator_type"] = self.accelerator_type
        if self.custom_resources():
            options["resources"] = self.custom_resources()
        return options

    def tensor_parallel_size(self) -> int:
        """One engine spans the GPUs its actor holds (at least one)."""
        return max(1, int(self.gpus))
