"""How a run feeds its units to warm engines (pipelines/engine/warm_pool.py), as Ray Data's actor pool
would: at most `units_in_flight` units per engine at a time, more engines started only while
every engine is full, units are waiting and the cluster has room for one more (up to
`compute.max_actors`; a unit is never handed to an engine that has no place to run), a unit
whose engine died sent again, and nothing new sent once the run is asked to stop.

A run that leaves with calls still under way (a second interrupt abandons them) marks its
engines abandoned, and the pool lets them go instead of keeping them warm: a unit still under
way in an engine is never in the way of the next run's (pipelines/engine/host.py waits for
them, and each unit keeps its own run's binding, pipelines/engine/actor.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spotbatch.errors import EngineFailed

if TYPE_CHECKING:
    from pipelines.stream.model_feed import ModelFeed

GROW_CHECK_SECONDS = 1.0  # how often the cluster is asked whether one more engine fits
WAIT_SECONDS = 0.25  # the longest the feed waits before it looks at stops and room again (and an interrupt is heard)


def fits(options: dict[str, Any], available: dict[str, float]) -> bool:
    """Whether the cluster has room now for one more actor asking for `options`.

    >>> fits({"num_cpus": 2, "resources": {"spot": 1}}, {"CPU": 3.0, "spot": 1.0})
    True
    >>> fits({"num_cpus": 2, "num_gpus": 1}, {"CPU": 8.0})
    False
    """
    wanted = {"CPU": options.get("num_cpus", 1), "GPU": options.get("num_gpus", 0), **options.get("resources", {})}
    return all(available.get(name, 0.0) >= amount for name, amount in wanted.items() if amount)


@dataclass(frozen=True)
class FeedLimits:
    units_in_flight: int
    """At most this many units per engine at a time."""
    max_sends: int
    """A unit whose engine died is sent again, up to this many sends in all."""


def rows_through_warm_engines(feed: ModelFeed, stopped: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    """The summary rows of `feed`'s units, through this driver's warm engines
    (pipelines/engine/warm_pool.py), which stay for the next run."""
    from pipelines.engine.actor import MODEL
    from pipelines.engine.warm_pool import POOL, engine_key
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    spec, args, resources = feed.spec, feed.engine_args, feed.resources
    records = Records(OutputStore(spec.output.path, spec.output.storage_options))
    engines = POOL.take(engine_key(args["spec_data"], args["model_source"], resources, args.get("adapter_sources")),
                        resources, feed.keep_warm, dtype=records.loaded_dtype(args["route_name"] or MODEL))
    try:
        yield from stream_units(engines, {**args, "read_spec_data": feed.spec_data}, feed.descriptors,
                                FeedLimits(resources.units_in_flight, max_sends=2 * spec.compute.max_attempts + 2),
                                stopped=stopped)
    finally:
        POOL.give_back(engines, (spec.output.path, spec.output.storage_options))


def stream_units(engines, context: dict[str, Any], descriptors: list[dict[str, Any]], limits: FeedLimits,
                 stopped: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
    """Feed units to the warm engines; yields each unit's summary row as it comes back. A call
    whose actor died is sent again, up to `limits.max_sends` times (Ray restarts the actor; the
    unit protocol knows what was committed, and gives up on a unit that kills its engine every
    time). Once `stopped()`, no unit is sent; the ones under way are waited for."""
    import ray
    from ray.exceptions import RayActorError  # an actor that died or is unreachable, whatever the cause

    todo = deque(descriptors)
    context_ref = ray.put(context)
    in_flight: dict[Any, tuple[int, dict[str, Any]]] = {}
    per_host: list[int] = [0] * len(engines.hosts)
    # The first min_actors engines are waited for, as Ray Data waits for min_actors; any more
    # (grown in an earlier run, or now) take units once they answer, that is, have a place.
    placed = set(range(min(engines.min_actors, len(engines.hosts))))
    placing = {host.identity.remote(): h for h, host in enumerate(engines.hosts[:engines.max_actors])
               if h not in placed}
    sends: dict[str, int] = {}
    grow_checked = float("-inf")
    try:
        while todo or in_flight:
            if stopped():
                todo.clear()  # asked to stop: no new unit; those under way commit or skip
            for h, host in enumerate(engines.hosts):
                while todo and h in placed and per_host[h] < limits.units_in_flight:
                    unit = todo.popleft()
                    in_flight[host.run_units.remote(context_ref, [unit])] = (h, unit)
                    per_host[h] += 1
            full = all(per_host[h] >= limits.units_in_flight for h in placed)
            if todo and full and not placing and time.monotonic() - grow_checked >= GROW_CHECK_SECONDS:
                grow_checked = time.monotonic()
                if engines.can_grow() and fits(engines.actor_options, ray.available_resources()):
                    host = engines.grow()
                    per_host.append(0)
                    placing[host.identity.remote()] = len(engines.hosts) - 1
            if not in_flight and not placing:
                continue
            ready, _ = ray.wait(list(in_flight) + list(placing), num_returns=1, timeout=WAIT_SECONDS)
            if not ready:
                continue
            if ready[0] in placing:
                placed.add(placing.pop(ready[0]))
                continue
            h, unit = in_flight.pop(ready[0])
            per_host[h] -= 1
            try:
                table = ray.get(ready[0])
            except RayActorError as err:
                sends[unit["unit_id"]] = sends.get(unit["unit_id"], 0) + 1
                if sends[unit["unit_id"]] >= limits.max_sends:
                    raise EngineFailed(f"unit {unit['unit_id']}: its engine actor died {limits.max_sends} times; "
                                       "re-run the same command to resume") from err
                todo.appendleft(unit)  # its actor died (a lost node, an engine that failed): again
                time.sleep(0.5)
                continue
            yield from table.to_pylist()
    finally:
        if in_flight:  # left with units under way (an abandon, an error): never kept warm
            engines.abandoned = True
